//! A line scanner for rule heads in Rego source. regorus keeps its AST private, so Tidemark
//! finds the heads it cares about (`deny`, `warn`, `violation`, `test_*`) by reading the lines
//! that start a rule, then asks the engine to confirm them (see `PolicySet::load`). Rule heads
//! are top-level, and `opa fmt` (like every conftest policy we have seen) starts them in
//! column 1; a head indented by hand is still evaluated, it just gets no load-time type check.

/// A rule head found in column 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head<'s> {
    pub name: &'s str,
    /// 1-based.
    pub line: u32,
    /// What follows the name, trimmed: `contains msg if {`, `[msg] {`, `:= true`, ...
    pub rest: &'s str,
}

/// Every rule head in column 1, in source order. `default NAME ...` counts as a head of NAME.
pub(crate) fn heads(source: &str) -> Vec<Head<'_>> {
    let mut heads = Vec::new();
    for (index, line) in source.lines().enumerate() {
        let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let text = line.strip_prefix("default ").map_or(line, str::trim_start);
        let name_len = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        let name = &text[..name_len];
        let starts_like_ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !starts_like_ident || KEYWORDS.contains(&name) {
            continue;
        }
        heads.push(Head {
            name,
            line: line_no,
            rest: text[name_len..].trim(),
        });
    }
    heads
}

/// Words that start a line without starting a rule.
const KEYWORDS: &[&str] = &["package", "import", "else", "some", "every", "not", "with"];

/// What a `deny`/`warn`/`violation` head says about the value it produces, when the head alone
/// tells: `None` for a set (`contains`, `[msg]`), anything not decidable from the head (a
/// comprehension, a variable) and ref heads like `deny.x`. `Some(kind)` names a value that can
/// never be a collection of messages.
pub(crate) fn scalar_head_kind(head: &Head<'_>) -> Option<&'static str> {
    let rest = head.rest;
    if rest.starts_with("contains") || rest.starts_with('[') || rest.starts_with('.') {
        return None;
    }
    if rest.starts_with('(') {
        return Some("a function");
    }
    if rest.is_empty() || rest.starts_with('{') || is_word(rest, "if") {
        // `deny if { ... }` and v0 `deny { ... }` are boolean rules.
        return Some("a boolean");
    }
    let value = rest
        .strip_prefix(":=")
        .or_else(|| rest.strip_prefix('='))?
        .trim_start();
    if is_word(value, "true") || is_word(value, "false") {
        Some("a boolean")
    } else if value.starts_with('"') || value.starts_with('`') {
        Some("a string")
    } else if value.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        Some("a number")
    } else if is_word(value, "null") {
        Some("null")
    } else {
        None
    }
}

/// How deep `{` and `[` may nest in a policy file. regorus (0.14.1) parses a term that opens
/// with `{` or `[` once as a comprehension and, when that fails, again as a set, object or
/// array, so the time doubles with every level: 20 levels take seconds, 30 take hours (found
/// by the `policy` fuzz target). Real policies nest a few levels; 12 parse in milliseconds.
pub(crate) const MAX_NESTING: usize = 12;

/// Where `{` or `[` first opens a level deeper than [`MAX_NESTING`] (1-based line and column,
/// in characters), outside strings and comments; `None` when nothing nests that deep.
pub(crate) fn too_deep(source: &str) -> Option<(u32, u32)> {
    let mut depth = 0usize;
    for (index, line) in code_only(source).lines().enumerate() {
        for (col, c) in line.chars().enumerate() {
            match c {
                '{' | '[' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        let number = |n: usize| u32::try_from(n + 1).unwrap_or(u32::MAX);
                        return Some((number(index), number(col)));
                    }
                }
                '}' | ']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// The source with every character of strings and comments (quotes and `#` included) blanked
/// to a space, newlines kept: lines and columns stay where they were.
pub(crate) fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars();
    // The quote of the string being read (`"` or a backtick), or `#` inside a comment.
    let mut inside: Option<char> = None;
    while let Some(c) = chars.next() {
        match (inside, c) {
            (_, '\n') => {
                if inside == Some('#') {
                    inside = None;
                }
                out.push('\n');
                continue;
            }
            (Some('"'), '\\') => {
                // The escaped character cannot end the string.
                out.push(' ');
                match chars.next() {
                    Some('\n') => out.push('\n'),
                    Some(_) => out.push(' '),
                    None => {}
                }
                continue;
            }
            (Some(quote), c) if c == quote && quote != '#' => inside = None,
            (Some(_), _) => {}
            (None, '"' | '`' | '#') => inside = Some(c),
            (None, c) => {
                out.push(c);
                continue;
            }
        }
        out.push(' ');
    }
    out
}

/// Rule heads at the top level, indented or not: lines that start outside every bracket.
pub(crate) fn top_level_heads(code: &str) -> Vec<Head<'_>> {
    let mut found = Vec::new();
    let mut depth = 0usize;
    for (index, line) in code.lines().enumerate() {
        if depth == 0 {
            let trimmed = line.trim_start();
            found.extend(heads(trimmed).into_iter().map(|head| Head {
                line: u32::try_from(index + 1).unwrap_or(u32::MAX),
                ..head
            }));
        }
        for c in line.chars() {
            match c {
                '{' | '[' | '(' => depth += 1,
                '}' | ']' | ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    found
}

/// Whether `text` starts with `word` as a whole word.
fn is_word(text: &str, word: &str) -> bool {
    text.strip_prefix(word)
        .is_some_and(|after| !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: &str, expected: &[(&str, u32, Option<&str>)]) {
        let found: Vec<_> = heads(source)
            .iter()
            .map(|h| (h.name, h.line, scalar_head_kind(h)))
            .collect();
        assert_eq!(found, expected, "{source}");
    }

    #[test]
    fn nesting_is_counted_outside_strings_and_comments() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(too_deep(&format!("x := {}", deep(MAX_NESTING))), None);
        assert_eq!(
            too_deep(&format!("x := {}", deep(MAX_NESTING + 1))),
            Some((1, 18))
        );
        assert_eq!(too_deep("a := {\n{[{[{[{[{[{[{[\n"), Some((2, 12)));
        let quoted = "{".repeat(40);
        assert_eq!(
            too_deep(&format!(
                "s := \"\\\"{quoted}\"\n# {quoted}\nr := `{quoted}`"
            )),
            None
        );
    }

    #[test]
    fn heads_and_their_kinds() {
        check(
            "package x\nimport rego.v1\n\ndeny contains msg if {\n  msg := \"a\"\n}\n",
            &[("deny", 4, None)],
        );
        check("deny[msg] {\n  msg := \"a\"\n}", &[("deny", 1, None)]);
        check(
            "deny if {\n input.x\n}\nwarn := true\nviolation = \"v\"",
            &[
                ("deny", 1, Some("a boolean")),
                ("warn", 4, Some("a boolean")),
                ("violation", 5, Some("a string")),
            ],
        );
        check("default deny := false", &[("deny", 1, Some("a boolean"))]);
        check("deny := 3", &[("deny", 1, Some("a number"))]);
        check("deny(x) := x", &[("deny", 1, Some("a function"))]);
        check(
            "deny := [m | m := \"a\"]\nwarn := msgs",
            &[("deny", 1, None), ("warn", 2, None)],
        );
        check("deny_all if true", &[("deny_all", 1, Some("a boolean"))]);
        check(
            "test_ok if {\n  true\n}",
            &[("test_ok", 1, Some("a boolean"))],
        );
        check("  deny if true\n# deny if x", &[]);
    }
}

//! Which functions a policy calls, found when it loads. regorus resolves a call only when
//! evaluation reaches it, so a policy calling a builtin Tidemark lacks (`crypto.sha256`,
//! `http.send`) would load fine and fail only on the plans that reach the call. A lexical scan
//! (strings and comments skipped) finds every `name(` and `a.b.name(`. A call into one of OPA's
//! builtin namespaces (`crypto.`, `http.`, `time.`, ...) must be a builtin regorus has, or a
//! function some file of the set defines (matched on its last segment, so an imported
//! `lib.f(x)` counts); anything else (a plain `f(x)`, `data.lib.f(x)`) is left to the engine. A
//! call the scan does not judge only defers its error to evaluation, which still blocks.

use std::collections::HashSet;

/// A call site: the dotted name and its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub name: String,
    pub line: u32,
}

/// Words followed by `(` that are not calls.
const NOT_CALLS: &[&str] = &[
    "not", "some", "every", "if", "else", "in", "with", "contains",
];

/// Every call in `source`, in order.
pub(crate) fn calls(source: &str) -> Vec<Call> {
    let bytes = source.as_bytes();
    let mut found = Vec::new();
    let (mut i, mut line, mut line_start) = (0usize, 1u32, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                line += 1;
                i += 1;
                line_start = i;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    if bytes[i] == b'\n' {
                        line += 1;
                        line_start = i + 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
                {
                    i += 1;
                }
                let name = source[start..i].trim_end_matches('.');
                let preceded_by_dot = start > 0 && bytes[start - 1] == b'.';
                // A head in column 1 defines a function; it does not call one.
                let defines = start == line_start;
                if bytes.get(i) == Some(&b'(')
                    && !preceded_by_dot
                    && !defines
                    && !NOT_CALLS.contains(&name)
                {
                    found.push(Call {
                        name: name.to_string(),
                        line,
                    });
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// OPA's builtin namespaces (<https://www.openpolicyagent.org/docs/policy-reference/builtins>).
const NAMESPACES: &[&str] = &[
    "base64",
    "base64url",
    "bits",
    "crypto",
    "glob",
    "graph",
    "graphql",
    "hex",
    "http",
    "io",
    "json",
    "net",
    "numbers",
    "object",
    "opa",
    "providers",
    "rand",
    "regex",
    "rego",
    "semver",
    "strings",
    "time",
    "units",
    "urlquery",
    "uuid",
    "yaml",
];

/// The calls into a builtin namespace that name no builtin regorus has and none of `defined`.
pub(crate) fn unknown<'a>(calls: &'a [Call], defined: &HashSet<&str>) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|call| {
            let Some((first, _)) = call.name.split_once('.') else {
                return false;
            };
            let last = call.name.rsplit('.').next().unwrap_or(&call.name);
            NAMESPACES.contains(&first)
                && !regorus::unstable::BUILTINS.contains_key(call.name.as_str())
                && !defined.contains(last)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(source: &str) -> Vec<(String, u32)> {
        calls(source)
            .into_iter()
            .map(|c| (c.name, c.line))
            .collect()
    }

    #[test]
    fn calls_outside_strings_and_comments() {
        let source = "package p\n\nlabels(x) := x.labels\n\ndeny contains msg if {\n  some r in input.resource_changes\n  regex.match(`a(b)`, r.address)\n  # crypto.sha256(\"x\")\n  msg := sprintf(\"%s (f(x))\", [data.lib.helper(r)])\n  not startswith(r.type, \"x\")\n}\n";
        assert_eq!(
            names(source),
            [
                ("regex.match".to_string(), 7),
                ("sprintf".to_string(), 9),
                ("data.lib.helper".to_string(), 9),
                ("startswith".to_string(), 10),
            ]
        );
    }

    #[test]
    fn builtins_and_defined_functions_are_known() {
        let source = "x := regex.match(\"a\", \"b\")\ny := helper(1)\nz := lib.helper(2)\nw := crypto.sha256(\"x\")\nv := print(1)\nu := http.send({})\nt := time.helper(1)\ns := data.lib.nothing(1)\n";
        let found = calls(source);
        let defined = HashSet::from(["helper"]);
        let unknown: Vec<&str> = unknown(&found, &defined)
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(unknown, ["crypto.sha256", "http.send"]);
    }
}

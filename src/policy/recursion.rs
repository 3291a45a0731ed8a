//! Recursive functions, found across a whole policy set before the engine sees it.
//!
//! regorus (0.14.1) checks rules for recursion but not functions, and evaluating `f(x) := f(x)`
//! overflows the stack, which ends the process: the server, with it (found by the `policy` fuzz
//! target). OPA refuses such a set at compile time (`rego_recursion_error`), so Tidemark does
//! too. The functions of every file are gathered under their full names (`PACKAGE.NAME`: files
//! that share a package share their functions), and a call resolves the way Rego resolves it:
//! a bare `f(` to the file's own package, `data.P.f(` to `P`, and `Q.f(` through the file's
//! `import data.P as Q` (or `import data.P`, which names it by its last segment). Functions are
//! the heads outside every bracket; strings and comments are skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::scan;

/// Where a function is defined: the file (its index in the set) and the line of its first head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Site {
    pub file: usize,
    pub line: u32,
}

/// A function that reaches itself: its full name, where it is, and the functions in between
/// (empty when it calls itself directly), in call order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cycle {
    pub name: String,
    pub site: Site,
    pub through: Vec<(String, Site)>,
}

/// One file's view: its package and what its import aliases stand for.
struct Scope {
    package: String,
    aliases: HashMap<String, String>,
}

impl Scope {
    fn of(code: &str) -> Scope {
        let package = code
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("package "))
            .map(|p| p.trim().to_string())
            .unwrap_or_default();
        let aliases = code
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("import "))
            .filter_map(|rest| {
                let mut words = rest.split_whitespace();
                let path = words.next()?.strip_prefix("data.")?;
                let alias = match (words.next(), words.next()) {
                    (Some("as"), Some(alias)) => alias,
                    _ => path.rsplit('.').next()?,
                };
                Some((alias.to_string(), path.to_string()))
            })
            .collect();
        Scope { package, aliases }
    }

    /// The full name a call of `reference` names, when it names a function of some package.
    fn resolve(&self, reference: &str) -> Option<String> {
        if let Some(full) = reference.strip_prefix("data.") {
            return Some(full.to_string());
        }
        match reference.split_once('.') {
            None => Some(self.qualify(reference)),
            Some((first, rest)) => self.aliases.get(first).map(|path| format!("{path}.{rest}")),
        }
    }

    fn qualify(&self, name: &str) -> String {
        if self.package.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.package)
        }
    }
}

/// The first function of `sources` (in file order, then line) that calls itself, directly or
/// through other functions of the set.
pub(crate) fn first_cycle<'a>(sources: impl IntoIterator<Item = &'a str>) -> Option<Cycle> {
    let mut sites: BTreeMap<String, Site> = BTreeMap::new();
    // Per function, the call references of its bodies with the scope they were written in.
    let mut bodies: Vec<(String, usize, String)> = Vec::new();
    let mut scopes = Vec::new();
    for (file, source) in sources.into_iter().enumerate() {
        let code = scan::code_only(source);
        let lines: Vec<&str> = code.lines().collect();
        let heads = scan::top_level_heads(&code);
        let scope = Scope::of(&code);
        for (i, head) in heads.iter().enumerate() {
            if !head.rest.starts_with('(') {
                continue;
            }
            let start = head.line as usize - 1;
            let end = heads
                .get(i + 1)
                .map_or(lines.len(), |h| h.line as usize - 1);
            let text = lines[start..end].join("\n");
            // From the argument list on: the head's own name is not a call.
            let body = text.find('(').map_or("", |at| &text[at..]).to_string();
            let name = scope.qualify(head.name);
            sites.entry(name.clone()).or_insert(Site {
                file,
                line: head.line,
            });
            bodies.push((name, scopes.len(), body));
        }
        scopes.push(scope);
    }
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, scope, body) in &bodies {
        let callees = graph.entry(name.as_str()).or_default();
        for reference in call_references(body) {
            if let Some(full) = scopes[*scope].resolve(reference)
                && let Some((key, _)) = sites.get_key_value(&full)
            {
                callees.insert(key.as_str());
            }
        }
    }
    let mut order: Vec<(&str, Site)> = sites.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    order.sort_by_key(|&(_, site)| (site.file, site.line));
    order.into_iter().find_map(|(name, site)| {
        let path = path_back(&graph, name)?;
        Some(Cycle {
            name: name.to_string(),
            site,
            through: path
                .into_iter()
                .map(|n| (n.to_string(), sites[n]))
                .collect(),
        })
    })
}

/// The functions between `start` and its own call, when it reaches itself (breadth first, so
/// the shortest way round).
fn path_back<'g>(
    graph: &BTreeMap<&'g str, BTreeSet<&'g str>>,
    start: &'g str,
) -> Option<Vec<&'g str>> {
    let mut parent: HashMap<&str, &str> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &next in graph.get(at).into_iter().flatten() {
            if next == start {
                let mut path = Vec::new();
                let mut node = at;
                while node != start {
                    path.push(node);
                    node = parent[node];
                }
                path.reverse();
                return Some(path);
            }
            if !parent.contains_key(next) {
                parent.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Every dotted identifier directly followed by `(` in `body`.
fn call_references(body: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let bytes = body.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let end = (i..bytes.len())
                .find(|&j| !ident(bytes[j]))
                .unwrap_or(bytes.len());
            if bytes.get(end) == Some(&b'(') {
                found.push(&body[i..end]);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function's name with the file index and line of its definition or call.
    type Site = (String, usize, u32);

    /// The cycle found in `files`, as `(name, file, line, [(through, file, line)])`.
    fn cycle(files: &[&str]) -> Option<(String, usize, u32, Vec<Site>)> {
        first_cycle(files.iter().copied()).map(|c| {
            (
                c.name,
                c.site.file,
                c.site.line,
                c.through
                    .into_iter()
                    .map(|(n, s)| (n, s.file, s.line))
                    .collect(),
            )
        })
    }

    #[test]
    fn functions_calling_themselves_in_one_file() {
        let direct = cycle(&["package a\nf(x) := f(x)\n"]);
        assert_eq!(direct, Some(("a.f".into(), 0, 2, vec![])));
        let through =
            cycle(&["package a.b\nf(x) := g(x)\ng(x) := y if {\n  y := data.a.b.f(x)\n}\n"]);
        assert_eq!(
            through,
            Some(("a.b.f".into(), 0, 2, vec![("a.b.g".into(), 0, 3)]))
        );
        for source in [
            "package a\nimport data.a as me\n  f(x) := me.f(x)\n",
            "package a\nimport data.a\nf(x) := y if {\n  y := a.f(x)\n}\n",
        ] {
            assert_eq!(
                cycle(&[source]).map(|c| c.0),
                Some("a.f".into()),
                "{source}"
            );
        }
    }

    #[test]
    fn calls_that_only_look_recursive_are_not() {
        for source in [
            "package a\nf(x) := sprintf(\"%v\", [x])\ng(x) := f(x)\ndeny contains m if { m := g(1) }\n",
            "package a\nf(x) := \"f(x)\"\n# f(1)\ng(x) := other.f(x)\n",
            // A function of another package with the same name is another function.
            "package a\nimport data.b\nf(x) := b.f(x)\n",
        ] {
            assert_eq!(cycle(&[source]), None, "{source}");
        }
    }

    #[test]
    fn recursion_across_files_and_packages_is_found() {
        let by_data = cycle(&[
            "package lib.a\nf(x) := data.lib.b.g(x)\n",
            "package lib.b\n\ng(x) := data.lib.a.f(x)\n",
        ]);
        assert_eq!(
            by_data,
            Some(("lib.a.f".into(), 0, 2, vec![("lib.b.g".into(), 1, 3)]))
        );
        let by_import = cycle(&[
            "package main\nimport rego.v1\nimport data.helpers as h\n\ndeny contains m if { m := h.g(1) }\nf(x) := h.g(x)\n",
            "package helpers\nimport data.main\ng(x) := main.f(x)\n",
        ]);
        assert_eq!(
            by_import,
            Some(("main.f".into(), 0, 6, vec![("helpers.g".into(), 1, 3)]))
        );
        // Two files of one package share their functions.
        let shared = cycle(&["package p\nf(x) := g(x)\n", "package p\ng(x) := f(x)\n"]);
        assert_eq!(
            shared,
            Some(("p.f".into(), 0, 2, vec![("p.g".into(), 1, 2)]))
        );
        // Calls between packages that do not come back are fine.
        let chain = cycle(&[
            "package a\nf(x) := data.b.g(x)\n",
            "package b\ng(x) := data.c.h(x)\n",
            "package c\nh(x) := x\n",
        ]);
        assert_eq!(chain, None);
    }
}

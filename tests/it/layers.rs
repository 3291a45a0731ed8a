//! The layering guard: a module uses only modules below it (ARCHITECTURE.md, "Layers"). Reads
//! every `src/**/*.rs` and fails on a `crate::X` path that reaches up or sideways.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top to bottom. A module may use any module listed after it, none listed before it.
const LAYERS: &[&str] = &[
    "cli",
    "app",
    "api",
    "engine",
    "config",
    "state_backend",
    "runner",
    "store",
    "variables",
    "review",
    "notify",
    "forge",
    "gate",
    "drift",
    "policy",
    "stacks",
    "run",
    "statefile",
    "plan",
    "delivery",
    "schedule",
    "crypto",
    "repo",
    "telemetry",
];

/// Items of the crate root (`lib.rs`) that any module may use.
const ROOT_ITEMS: &[&str] = &["install_crypto_provider"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file of a module: `src/NAME.rs` or everything under `src/NAME/`.
fn files_of(module: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{module}.rs"));
    if file.is_file() {
        return vec![file];
    }
    let mut found = Vec::new();
    let mut dirs = vec![src().join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The top-level modules named by `crate::X` paths in `text`, with their line numbers; a
/// grouped `crate::{a, b::c}` names `a` and `b`.
fn crate_uses(text: &str) -> Vec<(usize, String)> {
    let mut uses = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name = item.trim().split("::").next().unwrap_or("");
                    if !name.is_empty() {
                        uses.push((number + 1, name.to_string()));
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                uses.push((number + 1, name));
            }
        }
    }
    uses
}

/// `module`'s uses of modules it may not use, as `file:line: uses X`.
fn violations(module: &str) -> Vec<String> {
    let rank = LAYERS
        .iter()
        .position(|m| *m == module)
        .expect("a listed module");
    let mut found = Vec::new();
    for file in files_of(module) {
        let text = std::fs::read_to_string(&file).expect("read source");
        for (line, used) in crate_uses(&text) {
            if used == module || ROOT_ITEMS.contains(&used.as_str()) {
                continue;
            }
            let allowed = LAYERS
                .iter()
                .position(|m| *m == used)
                .is_some_and(|r| r > rank);
            if !allowed {
                let shown = file
                    .strip_prefix(src())
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                found.push(format!("src/{shown}:{line}: {module} uses crate::{used}"));
            }
        }
    }
    found
}

#[test]
fn every_module_uses_only_modules_below_it() {
    let found: Vec<String> = LAYERS.iter().flat_map(|m| violations(m)).collect();
    assert!(
        found.is_empty(),
        "imports that break the layering (a module uses only modules below it):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_of_the_crate_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let listed: BTreeSet<&str> = LAYERS.iter().copied().collect();
    assert_eq!(
        declared, listed,
        "lib.rs's modules and the layers listed here"
    );
}

#[test]
fn the_guard_sees_grouped_and_nested_paths() {
    let uses =
        crate_uses("use crate::{repo, stacks::Index};\nlet x = crate::engine::gate::decide();");
    let names: Vec<&str> = uses.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["repo", "stacks", "engine"]);
    assert_eq!(uses[2].0, 2);
}

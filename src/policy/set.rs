//! Policy sets: a directory of `*.rego` files (tests in `*_test.rego` kept apart), parsed once
//! into a regorus engine that every evaluation clones.

use std::fmt;
use std::path::{Path, PathBuf};

use super::scan;
use super::verdict::{Level, Rule};

/// The name of Tidemark's own policy set, the one [`PolicySet::shipped`] returns.
pub const SHIPPED_SET_NAME: &str = "shipped";

/// The shipped policies, embedded so the binary carries them wherever it runs. A test in
/// `tests/it/policy.rs` checks this list against the `policies/` directory.
const SHIPPED: &[(&str, &str)] = &[
    ("destroy.rego", include_str!("../../policies/destroy.rego")),
    (
        "destroy_test.rego",
        include_str!("../../policies/destroy_test.rego"),
    ),
    (
        "max_deletions.rego",
        include_str!("../../policies/max_deletions.rego"),
    ),
    (
        "max_deletions_test.rego",
        include_str!("../../policies/max_deletions_test.rego"),
    ),
    (
        "remediation.rego",
        include_str!("../../policies/remediation.rego"),
    ),
    (
        "remediation_test.rego",
        include_str!("../../policies/remediation_test.rego"),
    ),
    ("replace.rego", include_str!("../../policies/replace.rego")),
    (
        "replace_test.rego",
        include_str!("../../policies/replace_test.rego"),
    ),
    (
        "lib/plan.rego",
        include_str!("../../policies/lib/plan.rego"),
    ),
];

/// Why a policy set could not be loaded. Each variant names the file (and line when there is
/// one) so a person can go and fix it.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The cause is the `source()`, so `{:#}` shows it once.
    #[error("cannot read policy {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy directory {dir} has no .rego policies (tests in *_test.rego do not count)")]
    Empty { dir: PathBuf },
    #[error("{file}:{line}:{col}: syntax error: {message}")]
    Syntax {
        file: String,
        line: u32,
        col: u32,
        message: String,
    },
    #[error(
        "{file}:{line}: rule `{rule}` must be a set of messages (`{rule} contains msg if {{ ... }}`), not {found}"
    )]
    RuleType {
        file: String,
        line: u32,
        rule: String,
        found: String,
    },
    #[error("{file}: {message}")]
    Engine { file: String, message: String },
    #[error(
        "{file}:{line}: `{name}` is not a builtin Tidemark has (http.send and crypto.* are left out \
         on purpose: a policy judges the plan it is given) nor a function these policies define"
    )]
    UnknownFunction {
        file: String,
        line: u32,
        name: String,
    },
}

/// One policy file: where it is, what it says, the package it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// Relative to the set's directory, `/`-separated.
    pub path: String,
    /// How the file is named in errors: the full path for a directory on disk,
    /// `shipped:NAME` for an embedded one.
    pub label: String,
    pub source: String,
}

/// A rule Tidemark evaluates: `data.PACKAGE.RULE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Without the `data.` prefix, e.g. `tidemark.destroy`.
    pub package: String,
    pub rule: Rule,
    /// Where the rule is declared, for errors found at evaluation time.
    pub file: String,
    pub line: Option<u32>,
}

/// A loaded policy set with its enforcement level.
#[derive(Clone)]
pub struct PolicySet {
    name: String,
    level: Level,
    dir: Option<PathBuf>,
    files: Vec<PolicyFile>,
    tests: Vec<PolicyFile>,
    /// The policies (not the tests), parsed; cloned for every evaluation.
    pub(crate) engine: regorus::Engine,
    pub(crate) targets: Vec<Target>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("name", &self.name)
            .field("level", &self.level)
            .field("dir", &self.dir)
            .field(
                "files",
                &self.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            )
            .field(
                "tests",
                &self.tests.iter().map(|f| &f.path).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    /// Loads every `*.rego` under `dir` (recursively, skipping hidden entries), named after the
    /// directory. Files ending in `_test.rego` are kept for [`PolicySet::run_unit_tests`] and
    /// never evaluated against plans.
    pub fn load(dir: &Path, level: Level) -> Result<PolicySet, PolicyError> {
        let mut paths = Vec::new();
        collect_rego(dir, dir, &mut paths)?;
        paths.sort();
        let mut files = Vec::new();
        for relative in paths {
            let full = dir.join(&relative);
            let source = std::fs::read_to_string(&full).map_err(|source| PolicyError::Io {
                path: full.clone(),
                source,
            })?;
            files.push(PolicyFile {
                path: relative,
                label: full.display().to_string(),
                source,
            });
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        PolicySet::from_files(name, level, Some(dir.to_path_buf()), files)
    }

    /// Tidemark's shipped policies (embedded in the binary) at the given level.
    pub fn shipped(level: Level) -> Result<PolicySet, PolicyError> {
        let files = SHIPPED
            .iter()
            .map(|(path, source)| PolicyFile {
                path: path.to_string(),
                label: format!("{SHIPPED_SET_NAME}:{path}"),
                source: source.to_string(),
            })
            .collect();
        PolicySet::from_files(SHIPPED_SET_NAME.to_string(), level, None, files)
    }

    /// The names and contents of the shipped policy files, as embedded.
    pub fn shipped_sources() -> impl Iterator<Item = (&'static str, &'static str)> {
        SHIPPED.iter().copied()
    }

    /// Builds a set from files already in memory (paths relative, `/`-separated).
    pub fn from_files(
        name: String,
        level: Level,
        dir: Option<PathBuf>,
        files: Vec<PolicyFile>,
    ) -> Result<PolicySet, PolicyError> {
        let (tests, files): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|f| f.path.ends_with("_test.rego"));
        if files.is_empty() {
            return Err(PolicyError::Empty {
                dir: dir.clone().unwrap_or_else(|| PathBuf::from(&name)),
            });
        }
        check_calls(files.iter().chain(&tests))?;
        check_recursion(files.iter().chain(&tests))?;
        let mut engine = new_engine();
        let mut targets: Vec<Target> = Vec::new();
        for file in &files {
            let package = add_file(&mut engine, file)?;
            let heads = scan::heads(&file.source);
            if let Some((head, found)) = heads.iter().find_map(|head| {
                let collected = Rule::ALL.iter().any(|r| r.as_str() == head.name);
                collected
                    .then(|| scan::scalar_head_kind(head).map(|found| (head, found)))
                    .flatten()
            }) {
                return Err(PolicyError::RuleType {
                    file: file.label.clone(),
                    line: head.line,
                    rule: head.name.to_string(),
                    found: found.to_string(),
                });
            }
            // The engine, not the scanner, decides which rules exist: a head the scanner
            // cannot see (indented by hand) is still evaluated.
            for rule in Rule::ALL {
                let known = targets
                    .iter()
                    .any(|t| t.package == package && t.rule == rule);
                if !known && declares(&engine, file, rule.as_str())? {
                    targets.push(Target {
                        package: package.clone(),
                        rule,
                        file: file.label.clone(),
                        line: heads
                            .iter()
                            .find(|h| h.name == rule.as_str())
                            .map(|h| h.line),
                    });
                }
            }
        }
        Ok(PolicySet {
            name,
            level,
            dir,
            files,
            tests,
            engine,
            targets,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// The directory the set was loaded from; `None` for the shipped set.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The policies evaluated against plans.
    pub fn files(&self) -> &[PolicyFile] {
        &self.files
    }

    /// The `*_test.rego` files.
    pub fn tests(&self) -> &[PolicyFile] {
        &self.tests
    }

    /// Every `(package, rule)` the set evaluates, e.g. `("tidemark.destroy", Rule::Deny)`.
    pub fn rules(&self) -> impl Iterator<Item = (&str, Rule)> {
        self.targets.iter().map(|t| (t.package.as_str(), t.rule))
    }
}

/// Refuses a set that calls a builtin regorus lacks ([`super::calls`]), naming the first call.
fn check_calls<'a>(files: impl Iterator<Item = &'a PolicyFile> + Clone) -> Result<(), PolicyError> {
    let defined: std::collections::HashSet<&str> = files
        .clone()
        .flat_map(|f| scan::heads(&f.source))
        .filter(|h| h.rest.starts_with('('))
        .map(|h| h.name)
        .collect();
    for file in files {
        let calls = super::calls::calls(&file.source);
        if let Some(call) = super::calls::unknown(&calls, &defined).first() {
            return Err(PolicyError::UnknownFunction {
                file: file.label.clone(),
                line: call.line,
                name: call.name.clone(),
            });
        }
    }
    Ok(())
}

/// Refuses a set with a function that calls itself, directly or through functions of other
/// files ([`super::recursion`]), naming the function, its file and line, and the way round.
fn check_recursion<'a>(
    files: impl Iterator<Item = &'a PolicyFile> + Clone,
) -> Result<(), PolicyError> {
    let all: Vec<&PolicyFile> = files.collect();
    let Some(cycle) = super::recursion::first_cycle(all.iter().map(|f| f.source.as_str())) else {
        return Ok(());
    };
    let short = |full: &str| full.rsplit('.').next().unwrap_or(full).to_string();
    let file = all[cycle.site.file];
    let how = if cycle.through.is_empty() {
        String::new()
    } else {
        let steps: Vec<String> = cycle
            .through
            .iter()
            .map(|(name, site)| {
                if site.file == cycle.site.file {
                    format!("`{}` (line {})", short(name), site.line)
                } else {
                    format!("`data.{name}` ({}:{})", all[site.file].label, site.line)
                }
            })
            .collect();
        format!(" through {}", steps.join(", "))
    };
    Err(PolicyError::Engine {
        file: file.label.clone(),
        message: format!(
            "function `{}` (line {}) calls itself{how}: Rego does not allow recursion, and the \
             policy engine would overflow its stack evaluating it",
            short(&cycle.name),
            cycle.site.line
        ),
    })
}

/// A fresh engine with the limits every policy evaluation runs under.
pub(crate) fn new_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    // A policy that loops over a huge cross product must not stall a worker: past this it is an
    // evaluation error, which blocks the run like any other.
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: std::time::Duration::from_secs(10),
        check_interval: std::num::NonZeroU32::MIN.saturating_add(999),
    });
    engine
}

/// Parses one file into the engine and returns its package (without `data.`).
///
/// Rego v1 is tried first (the default of OPA 1.x and conftest); a file that only parses as
/// v0 (`deny[msg] { ... }` without `if`) is accepted as v0, the way `opa --v0-compatible`
/// would. When neither parses, the error reported is the one from the dialect that got further
/// into the file: that is almost always the dialect the author meant. On a tie the v0 error
/// wins: a v1 file fails v0 parsing early (at its first `contains` or `if`) unless it imports
/// `rego.v1`, and then both parsers say the same thing.
pub(crate) fn add_file(
    engine: &mut regorus::Engine,
    file: &PolicyFile,
) -> Result<String, PolicyError> {
    if let Some((line, col)) = scan::too_deep(&file.source) {
        return Err(PolicyError::Syntax {
            file: file.label.clone(),
            line,
            col,
            message: format!(
                "`{{` and `[` nest more than {} deep (Tidemark's limit: the Rego parser takes \
                 time exponential in the depth)",
                scan::MAX_NESTING
            ),
        });
    }
    engine.set_rego_v0(false);
    let v1 = engine.add_policy(file.label.clone(), file.source.clone());
    let package = match v1 {
        Ok(package) => Ok(package),
        Err(v1_error) => {
            engine.set_rego_v0(true);
            let v0 = engine.add_policy(file.label.clone(), file.source.clone());
            engine.set_rego_v0(false);
            v0.map_err(|v0_error| {
                let v1_error = engine_error(&file.label, &v1_error);
                let v0_error = engine_error(&file.label, &v0_error);
                if position(&v0_error) >= position(&v1_error) {
                    v0_error
                } else {
                    v1_error
                }
            })
        }
    }?;
    Ok(package
        .strip_prefix("data.")
        .unwrap_or(&package)
        .to_string())
}

fn position(error: &PolicyError) -> (u32, u32) {
    match error {
        PolicyError::Syntax { line, col, .. } => (*line, *col),
        _ => (0, 0),
    }
}

/// Turns a regorus error into a [`PolicyError`]. regorus formats source errors as
/// `--> FILE:LINE:COL`, the offending line with a caret, then `error: MESSAGE`; anything else
/// is kept whole.
pub(crate) fn engine_error(label: &str, error: &anyhow::Error) -> PolicyError {
    let text = format!("{error:#}");
    let location = text.lines().find_map(|l| l.trim().strip_prefix("--> "));
    let message = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "));
    if let (Some(location), Some(message)) = (location, message) {
        let mut parts = location.rsplitn(3, ':');
        let col = parts.next().and_then(|c| c.parse().ok());
        let line = parts.next().and_then(|l| l.parse().ok());
        if let (Some(line), Some(col), Some(file)) = (line, col, parts.next()) {
            return PolicyError::Syntax {
                file: file.to_string(),
                line,
                col,
                message: message.to_string(),
            };
        }
    }
    PolicyError::Engine {
        file: label.to_string(),
        message: text.trim().to_string(),
    }
}

/// Whether the engine agrees that `file` declares `rule` (the scanner only proposes).
fn declares(engine: &regorus::Engine, file: &PolicyFile, rule: &str) -> Result<bool, PolicyError> {
    engine
        .has_declared_rule_rooted_at(&file.label, rule)
        .map_err(|e| engine_error(&file.label, &e))
}

/// Collects `*.rego` paths under `dir`, relative to `root`, `/`-separated.
fn collect_rego(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), PolicyError> {
    let io = |source| PolicyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type().map_err(io)?.is_dir() {
            collect_rego(root, &path, out)?;
        } else if name.ends_with(".rego") {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<_> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

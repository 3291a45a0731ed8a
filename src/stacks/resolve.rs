//! Resolving paths into stacks and directories: local module sources (Terraform and
//! Terragrunt's `//` form), `depends_on` targets, and one stack's module closure with the
//! state it writes and reads. Pure functions of a commit's files and analyses.

use std::sync::Arc;

use super::eval::{PathExpr, Scope};
use super::hash::{Map, Set};
use super::hcl::{Backend, FileError};
use super::index::Files;
use super::paths;
use super::reads::{self, FileRead, StackRead};
use super::state::StateKey;
use super::{Location, StackError, StackKind, UnresolvedInput};

/// A directory's Terraform configuration, resolved where it does not depend on the stack or on
/// the rest of the tree: a function of the directory's path and tree id, so the index keeps it.
#[derive(Default)]
pub(crate) struct TfDir {
    /// Local module directories its `module` blocks use (existing or not).
    pub modules: Vec<ModuleUse>,
    pub problems: Vec<(String, FileError)>,
    pub backend: Option<Backend>,
    /// Remote state reads (evaluated per stack: local paths are relative to the stack).
    pub remote_states: Vec<Backend>,
    /// Files its expressions read, with the file each is written in (evaluated per stack:
    /// relative paths are the root module's).
    pub file_reads: Vec<(String, FileRead)>,
    /// Reads whose path is not known at all.
    pub unresolved: Vec<UnresolvedInput>,
}

/// A `module` block's local source, resolved, and where it is written.
pub(crate) struct ModuleUse {
    pub dir: String,
    pub file: String,
    pub line: u32,
}

/// What one stack is made of beyond its own directory, and the state it writes and reads.
pub(crate) struct Closure<'a> {
    /// Local module directories, traced recursively (not the stack's own directory).
    pub modules: Vec<&'a str>,
    pub errors: Vec<StackError>,
    pub reads: Vec<StateKey>,
    pub state: Option<StateKey>,
    /// Files the expressions of the stack and its modules read.
    pub file_reads: Vec<StackRead>,
    pub unresolved: Vec<UnresolvedInput>,
}

/// Walks a stack's local modules from its own directory (and its Terragrunt source). Each
/// directory is walked with its root module: what `path.root` and relative file paths mean
/// there (the stack, or for a Terragrunt unit the `source` Terraform runs in). A module reached
/// from two roots is walked once, from the first.
pub(crate) fn closure<'a>(
    files: &Files,
    tf_dirs: &'a Map<String, Arc<TfDir>>,
    dir: &'a str,
    kind: StackKind,
    extra: &'a [String],
) -> Closure<'a> {
    let exists = |p: &str| files.exists(p);
    let mut out = Closure {
        modules: Vec::new(),
        errors: Vec::new(),
        reads: Vec::new(),
        state: None,
        file_reads: Vec::new(),
        unresolved: Vec::new(),
    };
    let mut seen: Set<&str> = Set::default();
    let mut queue: Vec<(&str, &str)> = extra.iter().map(|m| (m.as_str(), m.as_str())).collect();
    queue.push((dir, dir));
    while let Some((current, root)) = queue.pop() {
        if !seen.insert(current) {
            continue;
        }
        if current != dir {
            out.modules.push(current);
        }
        let Some(tf) = tf_dirs.get(current) else {
            continue;
        };
        for (file, e) in &tf.problems {
            out.errors
                .push(StackError::at(dir, file, e.line, &e.message));
        }
        for m in &tf.modules {
            if files.has_dir(&m.dir) {
                queue.push((m.dir.as_str(), root));
            } else {
                let message = format!("module source {}: no such directory", m.dir);
                out.errors
                    .push(StackError::at(dir, &m.file, Some(m.line), &message));
            }
        }
        for read in &tf.remote_states {
            let scope = Scope {
                file_dir: current,
                included_dir: current,
                stack_dir: dir,
                exists: &exists,
            };
            if let Some(key) = StateKey::of(read, &scope) {
                out.reads.push(key);
            }
        }
        let scope = Scope {
            file_dir: current,
            included_dir: current,
            stack_dir: root,
            exists: &exists,
        };
        for (file, read) in &tf.file_reads {
            match reads::resolve(read, &scope, root) {
                Ok(input) => out.file_reads.push(StackRead {
                    input,
                    at: Location {
                        file: file.clone(),
                        line: read.line,
                    },
                }),
                Err(message) => {
                    out.errors
                        .push(StackError::at(dir, file, Some(read.line), &message))
                }
            }
        }
        out.unresolved.extend(tf.unresolved.iter().cloned());
    }
    let scope = Scope {
        file_dir: dir,
        included_dir: dir,
        stack_dir: dir,
        exists: &exists,
    };
    out.state = match tf_dirs.get(dir).and_then(|t| t.backend.as_ref()) {
        Some(backend) => StateKey::of(backend, &scope),
        None if kind == StackKind::Terraform => Some(StateKey::default_local(dir)),
        None => None,
    };
    out
}

/// Evaluates a path and joins it onto the file's directory.
pub(crate) fn resolve(expr: &PathExpr, scope: &Scope<'_>) -> Result<String, String> {
    let value = expr.eval(scope)?;
    paths::join(scope.file_dir, &value)
        .map_err(|_| format!("path {value:?} escapes the repository"))
}

/// The directory of a local module source, `None` for registry and remote sources.
/// Terragrunt's `//` sub-directory form and `?ref=` query are accepted.
pub(crate) fn local_source(
    expr: &PathExpr,
    scope: &Scope<'_>,
    terragrunt: bool,
) -> Option<Result<String, String>> {
    let literal = expr.literal().is_some();
    let value = match expr.eval(scope) {
        Ok(v) => v,
        Err(message) => return Some(Err(message)),
    };
    let value = value.split('?').next().unwrap_or_default();
    if terragrunt && (value.contains("::") || value.contains("://")) {
        return None;
    }
    if literal && value.starts_with('/') {
        return Some(Err(format!(
            "module source {value:?} is an absolute path outside the repository"
        )));
    }
    let local = value == "."
        || value == ".."
        || value.starts_with("./")
        || value.starts_with("../")
        || value.starts_with('/');
    if !local {
        return None;
    }
    Some(
        paths::join(scope.file_dir, &value.replace("//", "/"))
            .map_err(|_| format!("module source {value:?} escapes the repository")),
    )
}

/// A `depends_on` entry: a path from the root (`/x`), a path relative to the stack, or a name.
pub(crate) fn depends_on_target(
    dir: &str,
    target: &str,
    by_path: &Map<String, usize>,
    names: &Map<&str, usize>,
) -> Result<usize, String> {
    let explicit_path = target.starts_with('/') || target.starts_with('.');
    match paths::join(dir, target) {
        Ok(path) => {
            if let Some(&i) = by_path.get(&path) {
                return Ok(i);
            }
        }
        Err(_) if explicit_path => {
            return Err(format!("depends_on {target:?} escapes the repository"));
        }
        Err(_) => {}
    }
    if !explicit_path && let Some(&i) = names.get(target) {
        return Ok(i);
    }
    Err(format!("depends_on {target:?}: no such stack"))
}

//! The Terraform side of resolving a commit: analysing each directory's `.tf` and `.tf.json`
//! files into a [`TfDir`] (module calls, backend, remote state reads, file reads), reusing the
//! index's resolution of directories whose tree did not change.

use std::sync::Arc;

use anyhow::Result;
use git2::Oid;

use super::super::UnresolvedInput;
use super::super::eval::Scope;
use super::super::hash::Set;
use super::super::hcl::{FileError, Role};
use super::super::paths;
use super::super::resolve::{ModuleUse, TfDir, local_source};
use super::Builder;

impl Builder<'_> {
    /// Analyses the Terraform files of these directories and, transitively, of the local
    /// modules they use.
    pub(super) fn load_tf_dirs(&mut self, dirs: &[&str]) -> Result<()> {
        let mut unique: Set<&str> = Set::default();
        let mut frontier: Vec<String> = dirs
            .iter()
            .filter(|d| !self.tf_dirs.contains_key(**d) && unique.insert(d))
            .map(|d| d.to_string())
            .collect();
        while !frontier.is_empty() {
            let files = self.files;
            // Directories resolved by an earlier build need no parsing at all.
            let mut round: Vec<Arc<TfDir>> = Vec::with_capacity(frontier.len());
            let mut fresh = Vec::new();
            for dir in frontier {
                let cached = files
                    .tree_id(&dir)
                    .and_then(|tree| self.index.tf_dir(tree, &dir));
                match cached {
                    Some(tf) => {
                        round.push(tf.clone());
                        self.tf_dirs.insert(dir, tf);
                    }
                    None => fresh.push(dir),
                }
            }
            let wanted: Vec<(Oid, Role)> = fresh
                .iter()
                .flat_map(|d| files.in_dir(d))
                .filter_map(|(name, id)| Some((id, tf_role(name)?)))
                .collect();
            self.index.ensure(self.repo, &wanted)?;
            for dir in fresh {
                let tf = Arc::new(self.tf_dir(&dir));
                if let Some(tree) = files.tree_id(&dir) {
                    self.index.keep_tf_dir(tree, &dir, tf.clone());
                }
                round.push(tf.clone());
                self.tf_dirs.insert(dir, tf);
            }
            // Modules used by this round's directories that are not loaded yet. Most stacks
            // share a few modules, so deduplicate before allocating.
            let mut next: Set<String> = Set::default();
            for tf in &round {
                for m in &tf.modules {
                    if !self.tf_dirs.contains_key(&m.dir)
                        && !next.contains(m.dir.as_str())
                        && files.has_dir(&m.dir)
                    {
                        next.insert(m.dir.clone());
                    }
                }
            }
            frontier = next.into_iter().collect();
        }
        Ok(())
    }

    pub(super) fn tf_dir(&self, dir: &str) -> TfDir {
        let mut tf = TfDir::default();
        // Terraform has no file-searching functions: the directory alone decides.
        let exists = |_: &str| false;
        let scope = Scope {
            file_dir: dir,
            included_dir: dir,
            stack_dir: dir,
            exists: &exists,
        };
        for (name, id) in self.files.in_dir(dir) {
            let Some(facts) = tf_role(name).and_then(|role| self.index.facts(id, role)) else {
                continue;
            };
            let file = paths::child(dir, name);
            for e in &facts.errors {
                tf.problems.push((file.clone(), e.clone()));
            }
            for r in &facts.modules {
                match local_source(&r.expr, &scope, false) {
                    // Invalid in Terraform; the directory stays a stack and says so.
                    Some(Ok(module)) if module == dir => tf.problems.push((
                        file.clone(),
                        FileError {
                            line: Some(r.line),
                            message: "module source is the module's own directory (it calls \
                                      itself)"
                                .to_string(),
                        },
                    )),
                    Some(Ok(module)) => tf.modules.push(ModuleUse {
                        dir: module,
                        file: file.clone(),
                        line: r.line,
                    }),
                    Some(Err(message)) => tf.problems.push((
                        file.clone(),
                        FileError {
                            line: Some(r.line),
                            message,
                        },
                    )),
                    None => {}
                }
            }
            if facts.backend.is_some() {
                tf.backend.clone_from(&facts.backend);
            }
            tf.remote_states.extend(facts.remote_states.iter().cloned());
            let reads = facts.file_reads.iter().map(|r| (file.clone(), r.clone()));
            tf.file_reads.extend(reads);
            tf.unresolved
                .extend(
                    facts
                        .unresolved
                        .iter()
                        .map(|(line, expression)| UnresolvedInput {
                            file: file.clone(),
                            line: *line,
                            expression: expression.clone(),
                        }),
                );
        }
        tf
    }
}

/// How a file of a Terraform directory is analysed: HCL, JSON syntax, or not at all.
pub(super) fn tf_role(name: &str) -> Option<Role> {
    if paths::is_terraform(name) {
        Some(Role::Terraform)
    } else if name.ends_with(".tf.json") || name.ends_with(".tofu.json") {
        Some(Role::TerraformJson)
    } else {
        None
    }
}

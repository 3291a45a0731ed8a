//! The Terragrunt side of resolving a commit: following each unit's includes and reads (with
//! Terragrunt's path rules), and dropping parent configurations that are not units.

use anyhow::Result;
use git2::Oid;

use super::super::eval::Scope;
use super::super::hash::Set;
use super::super::hcl::Role;
use super::super::index::file_items;
use super::super::paths;
use super::super::reads::{self, StackRead};
use super::super::resolve::{local_source, resolve};
use super::super::{Location, StackError, StackKind};
use super::{Builder, Config, TgStack};

impl Builder<'_> {
    /// Follows each Terragrunt stack's includes, in rounds so each round parses in parallel.
    pub(super) fn terragrunt(&mut self, found: &[(String, StackKind)]) -> Result<Vec<TgStack>> {
        let mut out: Vec<TgStack> = found.iter().map(|_| TgStack::default()).collect();
        let mut seen: Set<(usize, String)> = Set::default();
        // (stack, file, the directory the file's relative paths are joined onto)
        let mut frontier: Vec<(usize, String, String)> = found
            .iter()
            .enumerate()
            .filter(|(_, (_, kind))| *kind == StackKind::Terragrunt)
            .map(|(i, (dir, _))| (i, paths::child(dir, "terragrunt.hcl"), dir.clone()))
            .collect();
        seen.extend(frontier.iter().map(|(i, file, _)| (*i, file.clone())));
        while !frontier.is_empty() {
            let wanted: Vec<(Oid, Role)> = frontier
                .iter()
                .filter_map(|(_, file, _)| self.files.blob(file))
                .map(|id| (id, Role::Terragrunt))
                .collect();
            self.index.ensure(self.repo, &wanted)?;
            let mut next = Vec::new();
            for (i, file, base) in frontier {
                let stack_dir = found[i].0.as_str();
                let Some(facts) = self
                    .files
                    .blob(&file)
                    .and_then(|id| self.index.facts(id, Role::Terragrunt))
                else {
                    continue;
                };
                let files = self.files;
                let exists = |p: &str| files.exists(p);
                // Terragrunt merges an included file into the unit: its relative paths are the
                // unit's, and only get_parent_terragrunt_dir() names the file's own directory.
                // A file read by read_terragrunt_config keeps its own directory.
                let scope = Scope {
                    file_dir: &base,
                    included_dir: paths::parent(&file),
                    stack_dir,
                    exists: &exists,
                };
                let mut error = |line: Option<u32>, message: String| {
                    self.errors
                        .push(StackError::at(stack_dir, &file, line, &message));
                };
                for e in &facts.errors {
                    error(e.line, e.message.clone());
                }
                let includes = facts.includes.iter().map(|r| (r, true));
                for (r, merged) in includes.chain(facts.reads.iter().map(|r| (r, false))) {
                    match resolve(&r.expr, &scope) {
                        Ok(path) if files.exists(&path) => {
                            if seen.insert((i, path.clone())) {
                                out[i].included.push(path.clone());
                                let base = if merged {
                                    base.clone()
                                } else {
                                    paths::parent(&path).to_string()
                                };
                                next.push((i, path, base));
                            }
                        }
                        Ok(path) => error(Some(r.line), format!("included file {path} not found")),
                        Err(message) => error(Some(r.line), format!("include: {message}")),
                    }
                }
                for r in &facts.modules {
                    match local_source(&r.expr, &scope, true) {
                        Some(Ok(dir)) => out[i].modules.push(dir),
                        Some(Err(message)) => error(Some(r.line), message),
                        None => {}
                    }
                }
                for read in &facts.file_reads {
                    match reads::resolve(read, &scope, &base) {
                        Ok(input) => out[i].file_reads.push(StackRead {
                            input,
                            at: Location {
                                file: file.clone(),
                                line: read.line,
                            },
                        }),
                        Err(message) => error(Some(read.line), message),
                    }
                }
                for (line, expression) in &facts.unresolved {
                    out[i].unresolved.push(super::super::UnresolvedInput {
                        file: file.clone(),
                        line: *line,
                        expression: expression.clone(),
                    });
                }
                for r in &facts.dependencies {
                    match resolve(&r.expr, &scope) {
                        Ok(dir) => out[i].dependencies.push((dir, file.clone(), r.line)),
                        Err(message) => error(Some(r.line), format!("dependency: {message}")),
                    }
                }
            }
            frontier = next;
        }
        Ok(out)
    }

    /// `terragrunt.stack.hcl` files: Tidemark does not generate their units. A block whose
    /// generated directory is committed is a stack like any other (found by its
    /// `terragrunt.hcl`); the others are reported by name, so a repository of stack files does
    /// not come up empty without a word. A unit's local `source` is a template of units (it
    /// reads `values`), not a stack: returned, to be dropped, and reported. The errors are
    /// returned for after the drop.
    pub(super) fn terragrunt_stacks(
        &mut self,
        found: &[(String, StackKind)],
    ) -> Result<(Set<String>, Vec<StackError>)> {
        const NAME: &str = "terragrunt.stack.hcl";
        let mut templates: Set<String> = Set::default();
        let mut errors = Vec::new();
        let stack_files: Vec<(String, Oid)> = self
            .files
            .dirs()
            .filter_map(|(dir, items)| {
                let (_, id) = file_items(items).find(|(n, _)| *n == NAME)?;
                Some((dir.to_string(), id))
            })
            .collect();
        if stack_files.is_empty() {
            return Ok((templates, errors));
        }
        let wanted: Vec<(Oid, Role)> = stack_files
            .iter()
            .map(|(_, id)| (*id, Role::TerragruntStack))
            .collect();
        self.index.ensure(self.repo, &wanted)?;
        let units: Set<&str> = found
            .iter()
            .filter(|(_, kind)| *kind == StackKind::Terragrunt)
            .map(|(dir, _)| dir.as_str())
            .collect();
        for (dir, id) in &stack_files {
            let Some(facts) = self.index.facts(*id, Role::TerragruntStack) else {
                continue;
            };
            let file = paths::child(dir, NAME);
            for e in &facts.errors {
                errors.push(StackError::at(dir, &file, e.line, &e.message));
            }
            let mut missing = Vec::new();
            for block in &facts.stack_blocks {
                let marker = if block.kind == "unit" {
                    "terragrunt.hcl"
                } else {
                    NAME
                };
                let committed = block
                    .generated(dir)
                    .is_some_and(|g| self.files.exists(&paths::child(&g, marker)));
                if !committed {
                    missing.push(format!("{} {:?}", block.kind, block.name));
                }
                if block.kind == "unit"
                    && let Some(source) = block.local_source(dir)
                    && units.contains(source.as_str())
                    && templates.insert(source.clone())
                {
                    let message = format!(
                        "unit {:?}: {source} is its template, not a stack",
                        block.name
                    );
                    errors.push(StackError::at(dir, &file, Some(block.line), &message));
                }
            }
            if !missing.is_empty() {
                let message = format!(
                    "{NAME} is not supported yet; its units are not stacks: {}",
                    missing.join(", ")
                );
                errors.push(StackError::at(dir, &file, None, &message));
            }
        }
        Ok((templates, errors))
    }

    /// A `terragrunt.hcl` that other units include and that has no `terraform` block is their
    /// configuration, not a unit of its own (unless a `stack.hcl` makes it one); a unit template
    /// of a `terragrunt.stack.hcl` is not one either: both dropped, with the errors reported in
    /// their name.
    pub(super) fn without_parent_configs(
        &mut self,
        found: Vec<(String, StackKind)>,
        configs: Vec<Config>,
        tg: Vec<TgStack>,
        templates: &Set<String>,
    ) -> (Vec<(String, StackKind)>, Vec<Config>, Vec<TgStack>) {
        let included: Set<&str> = tg
            .iter()
            .flat_map(|t| t.included.iter().map(String::as_str))
            .collect();
        let parent: Vec<bool> = found
            .iter()
            .zip(&configs)
            .map(|((dir, kind), config)| {
                let file = paths::child(dir, "terragrunt.hcl");
                let parent = included.contains(file.as_str())
                    && self
                        .files
                        .blob(&file)
                        .and_then(|id| self.index.facts(id, Role::Terragrunt))
                        .is_some_and(|facts| !facts.terraform_block);
                *kind == StackKind::Terragrunt
                    && matches!(config, Config::None)
                    && (parent || templates.contains(dir))
            })
            .collect();
        if !parent.contains(&true) {
            return (found, configs, tg);
        }
        let dropped: Set<String> = found
            .iter()
            .zip(&parent)
            .filter(|(_, p)| **p)
            .map(|((dir, _), _)| dir.clone())
            .collect();
        self.errors.retain(|e| !dropped.contains(&e.stack));
        let mut out = (Vec::new(), Vec::new(), Vec::new());
        for (((stack, config), t), parent) in found.into_iter().zip(configs).zip(tg).zip(parent) {
            if !parent {
                out.0.push(stack);
                out.1.push(config);
                out.2.push(t);
            }
        }
        out
    }
}

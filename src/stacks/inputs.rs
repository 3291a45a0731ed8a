//! What a run of one stack reads: the paths change detection already attributes to it (its own
//! directory minus nested stacks and uncalled module directories, its local modules' Terraform
//! files, the files its expressions name, Terragrunt includes, watch globs), plus what its
//! Terragrunt dependencies read (Terragrunt parses them for their outputs) and the directories
//! of the stacks whose state it reads. A run's workspace holds only these: a module's other
//! files (a README image, CI configuration, a sub-module nothing calls) are left out, which is
//! also why a change to them affects nothing. A directory holding a read the analysis cannot
//! resolve (an unresolved input) is exported whole, so the run does not fail for it; detection
//! still needs a `watch`, which both triggers the stack and exports the file.

use anyhow::Result;
use git2::{Oid, Repository};

use super::discovery::Snapshot;
use super::hash::Set;
use super::paths::ModuleFile;
use super::reads::Input;
use super::{EdgeKind, Index, Stack, paths, snapshot};
use crate::repo::{Export, Selection};

impl Snapshot {
    /// What a run of stack `i` must have on disk. Pure: a function of the snapshot.
    pub(crate) fn export_of(&self, i: usize) -> Export {
        let mut seen: Set<usize> = Set::default();
        let mut queue = vec![i];
        let mut stacks = Vec::new();
        while let Some(s) = queue.pop() {
            if !seen.insert(s) {
                continue;
            }
            if self.export_full[s] {
                return Export::Full;
            }
            stacks.push(s);
            for (up, kind) in &self.upstreams[s] {
                if *kind == EdgeKind::Dependency {
                    queue.push(*up);
                }
            }
        }
        let mut selection = Selection::default();
        for &s in &stacks {
            selection.dirs.push(self.stacks[s].path.clone());
            selection.files.extend(self.included[s].iter().cloned());
            for (up, kind) in &self.upstreams[s] {
                if *kind == EdgeKind::RemoteState {
                    selection.dirs.push(self.stacks[*up].path.clone());
                }
            }
            let dir = &self.stacks[s].path;
            for pattern in &self.stacks[s].watch {
                if let Ok(glob) = paths::join(dir, pattern) {
                    selection.globs.push(glob);
                }
            }
            // A directory with a read Tidemark cannot resolve is exported whole, so the run
            // still finds what it reads (detection cannot: that is what a `watch` is for).
            for input in &self.stacks[s].unresolved_inputs {
                selection.dirs.push(paths::parent(&input.file).to_string());
            }
            for read in &self.file_reads[s] {
                match &read.input {
                    Input::Path(path) if self.files.exists(path) => {
                        selection.files.push(path.clone())
                    }
                    // A directory read as a whole, or a file that is not there (yet).
                    Input::Path(path) => selection.dirs.push(path.clone()),
                    Input::Glob(glob) => selection.globs.push(glob.clone()),
                }
            }
        }
        // A module is its Terraform files (and, run as a Terragrunt unit's root module, its
        // variable and lock files); the rest of its directory is exported only when read.
        for (users, root) in [(&self.module_users, false), (&self.root_module_users, true)] {
            for (module, users) in users.iter() {
                if users.iter().any(|u| seen.contains(u)) {
                    let files = self.files.in_dir(module).filter(|(name, _)| {
                        match paths::module_file(name) {
                            Some(ModuleFile::Config) => true,
                            Some(ModuleFile::Root) => root,
                            None => false,
                        }
                    });
                    selection
                        .files
                        .extend(files.map(|(name, _)| paths::child(module, name)));
                }
            }
        }
        selection.dirs.sort_unstable();
        selection.dirs.dedup();
        selection.files.sort_unstable();
        selection.files.dedup();
        selection.globs.sort_unstable();
        selection.globs.dedup();
        // Nested stacks below an exported directory are not part of it, unless exported too.
        for stack in &self.stacks {
            let nested = paths::ancestors(paths::parent(&stack.path)).any(|d| {
                selection
                    .dirs
                    .binary_search_by(|x| x.as_str().cmp(d))
                    .is_ok()
            });
            let selected = selection
                .dirs
                .binary_search_by(|x| x.as_str().cmp(&stack.path))
                .is_ok();
            if stack.path != paths::ROOT && nested && !selected {
                selection.prune.insert(stack.path.clone());
            }
        }
        self.prune_uncalled_modules(&seen, &mut selection);
        Export::Only(selection)
    }
}

impl Snapshot {
    /// Directories of Terraform files inside an exported stack's directory that the stack does
    /// not call (examples, unused sub-modules) are not what it reads: left out, as nested stacks
    /// are. What an expression names in them is exported still (as files, globs or dirs).
    fn prune_uncalled_modules(&self, exported: &Set<usize>, selection: &mut Selection) {
        for (dir, _) in self.files.dirs() {
            if self.by_path.contains_key(dir) || !self.files.holds_terraform(dir) {
                continue;
            }
            let owner = paths::ancestors(paths::parent(dir))
                .find_map(|d| self.by_path.get(d).copied())
                .filter(|s| exported.contains(s));
            let Some(owner) = owner else {
                continue;
            };
            let calls = self
                .module_users
                .get(dir)
                .is_some_and(|users| users.contains(&owner));
            let selected = selection
                .dirs
                .binary_search_by(|x| x.as_str().cmp(dir))
                .is_ok();
            if dir != paths::ROOT && !calls && !selected {
                selection.prune.insert(dir.to_string());
            }
        }
    }
}

/// What a run of `stack` at `commit` must have on disk, or `None` when `commit` has no such
/// stack. Pass the repository's [`Index`] to reuse earlier work.
pub fn export_of(
    repo: &Repository,
    commit: Oid,
    stack: &str,
    index: Option<&mut Index>,
) -> Result<Option<Export>> {
    Ok(run_inputs(repo, commit, stack, index)?.map(|inputs| inputs.export))
}

/// What a run of one instance takes from its commit.
#[derive(Debug, Clone)]
pub struct RunInputs {
    /// What it must have on disk: its stack's closure and its variable files.
    pub export: Export,
    /// The instance as discovered at the commit: its directory, environment, variable files,
    /// workspace and backend settings.
    pub stack: Stack,
}

/// What a run of `stack` (an instance path: `stacks/app@prod`, or a stack's directory) takes
/// from `commit`, or `None` when `commit` has no such instance.
pub fn run_inputs(
    repo: &Repository,
    commit: Oid,
    stack: &str,
    index: Option<&mut Index>,
) -> Result<Option<RunInputs>> {
    let mut scratch = Index::new();
    let index = index.unwrap_or(&mut scratch);
    let tree = crate::repo::commit_tree(repo, commit)?;
    let snap = snapshot(repo, tree, index)?;
    let stack = stack.trim_end_matches('/');
    let stack = if stack.is_empty() { paths::ROOT } else { stack };
    let Some(&n) = snap.instances.by_path.get(stack) else {
        return Ok(None);
    };
    let instance = snap.instances.stacks[n].clone();
    let mut export = snap.export_of(snap.instances.stack_of[n]);
    if let Export::Only(selection) = &mut export
        && !instance.var_files.is_empty()
    {
        selection.files.extend(instance.var_files.iter().cloned());
        selection.files.sort_unstable();
        selection.files.dedup();
    }
    Ok(Some(RunInputs {
        export,
        stack: instance,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::TestRepo;
    use super::*;

    fn module(source: &str) -> String {
        format!("module \"m\" {{\n  source = \"{source}\"\n}}\n")
    }

    fn selection(repo: &TestRepo, commit: Oid, stack: &str) -> Selection {
        match export_of(&repo.repo, commit, stack, None).expect("export_of") {
            Some(Export::Only(selection)) => selection,
            other => panic!("expected a selection, got {other:?}"),
        }
    }

    #[test]
    fn a_stack_exports_its_directory_its_modules_files_recursively_and_watch_globs() {
        let mut repo = TestRepo::new();
        repo.write("stacks/a/main.tf", &module("../../modules/x"));
        repo.write(
            "stacks/a/stack.hcl",
            "stack {\n  watch = [\"../../shared/*.json\"]\n}\n",
        );
        repo.write("stacks/b/main.tf", &module("../../modules/z"));
        repo.write("modules/x/main.tf", &module("../y"));
        repo.write("modules/y/main.tf", "");
        repo.write("modules/z/main.tf", "");
        repo.write("big/data.txt", "unrelated");
        let head = repo.commit();
        let got = selection(&repo, head, "stacks/a");
        // A module is its Terraform files (issue 14, item 6), not its whole directory.
        assert_eq!(got.dirs, ["stacks/a"]);
        assert_eq!(got.globs, ["shared/*.json"]);
        assert_eq!(got.files, ["modules/x/main.tf", "modules/y/main.tf"]);
        assert!(
            export_of(&repo.repo, head, "nope", None)
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn terragrunt_includes_and_dependencies_are_exported() {
        let mut repo = TestRepo::new();
        repo.write("live/root.hcl", "locals {}\n");
        repo.write(
            "live/app/terragrunt.hcl",
            "include \"root\" {\n  path = find_in_parent_folders(\"root.hcl\")\n}\n\
             terraform {\n  source = \"../../modules/app\"\n}\n\
             dependency \"net\" {\n  config_path = \"../net\"\n}\n",
        );
        repo.write(
            "live/net/terragrunt.hcl",
            "terraform {\n  source = \"../../modules/net\"\n}\n",
        );
        repo.write("live/other/terragrunt.hcl", "");
        repo.write("modules/app/main.tf", "");
        repo.write("modules/net/main.tf", "");
        let head = repo.commit();
        let got = selection(&repo, head, "live/app");
        assert_eq!(got.dirs, ["live/app", "live/net"]);
        assert_eq!(
            got.files,
            [
                "live/root.hcl",
                "modules/app/main.tf",
                "modules/net/main.tf"
            ]
        );
    }

    #[test]
    fn export_full_is_the_escape_hatch_and_bad_values_are_errors() {
        let mut repo = TestRepo::new();
        repo.write("a/main.tf", "");
        repo.write("a/stack.hcl", "stack {\n  export = \"full\"\n}\n");
        repo.write("b/main.tf", "");
        repo.write("b/stack.hcl", "stack {\n  export = \"most\"\n}\n");
        let head = repo.commit();
        let got = export_of(&repo.repo, head, "a", None).expect("ok");
        assert_eq!(got, Some(Export::Full));
        let found = super::super::discover(&repo.repo, head, None).expect("ok");
        assert_eq!(found.errors.len(), 1, "{:?}", found.errors);
        assert!(found.errors[0].message.contains("export"));
        assert!(matches!(
            export_of(&repo.repo, head, "b", None).expect("ok"),
            Some(Export::Only(_))
        ));
    }

    #[test]
    fn an_export_writes_only_the_selection_at_its_place() {
        let mut repo = TestRepo::new();
        repo.write(
            "stacks/a/main.tf",
            &format!(
                "{}{}",
                module("../../modules/x"),
                module("./mods/m").replace("\"m\"", "\"n\"")
            ),
        );
        repo.write("stacks/a/files/x.json", "{}");
        repo.write("stacks/a/mods/m/main.tf", "");
        repo.write("stacks/a/inner/main.tf", "");
        repo.write("modules/x/main.tf", "");
        repo.write("big/data.txt", "unrelated");
        let head = repo.commit();
        let what = export_of(&repo.repo, head, "stacks/a", None)
            .expect("ok")
            .expect("ok");
        let Export::Only(selection) = &what else {
            panic!("a selection");
        };
        assert!(
            selection
                .files
                .contains(&"stacks/a/mods/m/main.tf".to_string())
        );
        let dest = tempfile::tempdir().expect("ok");
        let done = crate::repo::export(&repo.repo, head, dest.path(), &what).expect("ok");
        let mut files: Vec<String> = walkdir(dest.path());
        files.sort();
        assert_eq!(
            files,
            [
                "modules/x/main.tf",
                "stacks/a/files/x.json",
                "stacks/a/main.tf",
                "stacks/a/mods/m/main.tf"
            ]
        );
        assert_eq!(done.files, 4);
        assert_eq!(done.top, ["modules", "stacks"]);
        assert!(done.describe().contains("4 files under modules, stacks"));
    }

    #[test]
    fn an_export_holds_the_files_expressions_read_and_not_the_rest_of_a_module() {
        let mut repo = TestRepo::new();
        repo.write("stacks/a/stack.hcl", "stack {}\n");
        repo.write(
            "stacks/a/main.tf",
            &format!(
                "{}locals {{\n  p = file(\"${{path.module}}/policy.json\")\n}}\n",
                module("../../modules/x")
            ),
        );
        repo.write("stacks/a/policy.json", "{}");
        repo.write("stacks/a/examples/basic/main.tf", &module("../.."));
        repo.write(
            "modules/x/main.tf",
            "locals {\n  t = templatefile(\"${path.module}/tpl/init.tpl\", {})\n  s = fileset(path.module, \"policies/*.json\")\n}\n",
        );
        repo.write("modules/x/tpl/init.tpl", "x");
        repo.write("modules/x/policies/a.json", "{}");
        repo.write("modules/x/.terraform.lock.hcl", "# lock");
        repo.write("modules/x/docs/diagram.png", "png");
        repo.write("modules/x/.github/workflows/ci.yml", "on: push");
        repo.write("modules/x/modules/unused/main.tf", "");
        repo.write("modules/y/main.tf", "locals {\n  p = file(var.path)\n}\n");
        repo.write("modules/y/files/p.json", "{}");
        repo.write(
            "stacks/a/y.tf",
            &module("../../modules/y").replace("\"m\"", "\"y\""),
        );
        let head = repo.commit();
        let what = export_of(&repo.repo, head, "stacks/a", None)
            .expect("ok")
            .expect("ok");
        let dest = tempfile::tempdir().expect("ok");
        crate::repo::export(&repo.repo, head, dest.path(), &what).expect("ok");
        let mut files: Vec<String> = walkdir(dest.path());
        files.sort();
        assert_eq!(
            files,
            [
                "modules/x/main.tf",
                "modules/x/policies/a.json",
                "modules/x/tpl/init.tpl",
                // Its read is unresolved: the module goes whole.
                "modules/y/files/p.json",
                "modules/y/main.tf",
                "stacks/a/main.tf",
                "stacks/a/policy.json",
                "stacks/a/stack.hcl",
                "stacks/a/y.tf",
            ]
        );
    }

    fn walkdir(root: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("ok") {
                let path = entry.expect("ok").path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(root).expect("ok");
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out
    }
}

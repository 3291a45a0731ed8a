//! Resolving one commit into a [`Snapshot`]: which directories are stacks, what each is made of
//! (own files, local modules traced recursively, Terragrunt includes, watch globs) and the edges
//! between stacks (`depends_on`, Terragrunt dependencies, `terraform_remote_state`).
//! Stacks come from `stack.hcl` and `terragrunt.hcl`; without any, from a root `atlantis.yaml`;
//! without that, from autodiscovery.

mod projects;
mod terraform;
mod terragrunt;

use std::sync::Arc;

use anyhow::Result;
use git2::{Oid, Repository};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use super::atlantis::Project;
use super::hash::{Map, Set};
use super::hcl::{FileFacts, Role, StackConfig};
use super::index::{Files, Index, file_items};
use super::instances::{self, Instances, StackPart};
use super::paths;
use super::reads::{ReadIndex, StackRead};
use super::resolve::{Closure, TfDir, closure, depends_on_target};
use super::state::StateKey;
use super::{EdgeKind, Stack, StackError, StackKind, StackSource};
use terraform::tf_role;

/// Everything known about the stacks at one commit, ready to answer "who owns this path".
pub(crate) struct Snapshot {
    /// Sorted by path.
    pub stacks: Vec<Stack>,
    pub by_path: Map<String, usize>,
    /// For each stack, its upstream stacks and how each edge arose.
    pub upstreams: Vec<Vec<(usize, EdgeKind)>>,
    pub errors: Vec<StackError>,
    /// Local module directory -> stacks whose configuration uses it (directly or nested).
    pub module_users: Map<String, Vec<usize>>,
    /// Terragrunt `source` directory -> the units running it as their root module.
    pub root_module_users: Map<String, Vec<usize>>,
    /// Per stack: the files its expressions (and its modules') read.
    pub file_reads: Vec<Vec<StackRead>>,
    /// `file_reads` by the paths and globs they name.
    pub readers: ReadIndex,
    /// The commit's files, for what a module directory holds.
    pub files: Files,
    /// Included Terragrunt file -> stacks that include or read it.
    pub include_users: Map<String, Vec<usize>>,
    pub watch: GlobSet,
    /// The stack each glob in `watch` belongs to.
    pub watch_owner: Vec<usize>,
    /// Per stack: `export = "full"` in its `stack.hcl`.
    pub export_full: Vec<bool>,
    /// Per stack: the Terragrunt files it includes or reads.
    pub included: Vec<Vec<String>>,
    /// Followed symbolic links as (target, link): a change under a target is seen at the link.
    pub links: Vec<(String, String)>,
    /// The stacks' instances (one per `environment`, or the stack itself) and their graph.
    pub instances: Instances,
}

/// A stack's configuration: its `stack.hcl` analysis (shared with the index rather than
/// copied), its `atlantis.yaml` project, or nothing.
enum Config {
    None,
    File(Arc<FileFacts>),
    Atlantis(Box<StackConfig>),
}

/// What a stack without `stack.hcl` (or without a `stack` block) is configured with.
pub(super) static NO_CONFIG: StackConfig = StackConfig {
    name: None,
    depends_on: Vec::new(),
    watch: Vec::new(),
    drift_schedule: None,
    auto_apply: false,
    runner: None,
    tags: Vec::new(),
    drift_remediation: super::DriftRemediation::None,
    export_full: false,
    environments: Vec::new(),
};

impl Config {
    fn get(&self) -> &StackConfig {
        match self {
            Config::None => &NO_CONFIG,
            Config::File(facts) => facts.stack.as_ref().unwrap_or(&NO_CONFIG),
            Config::Atlantis(config) => config,
        }
    }

    /// The file the settings are written in, for errors about them.
    fn file(&self, dir: &str, atlantis: &str) -> String {
        match self {
            Config::Atlantis(_) => atlantis.to_string(),
            _ => paths::child(dir, "stack.hcl"),
        }
    }
}

/// What a Terragrunt stack's configuration adds, through its includes.
#[derive(Default)]
struct TgStack {
    included: Vec<String>,
    modules: Vec<String>,
    dependencies: Vec<(String, String, u32)>,
    unresolved: Vec<super::UnresolvedInput>,
    /// Files its Terragrunt configuration reads (`file(find_in_parent_folders("env.yaml"))`).
    file_reads: Vec<StackRead>,
}

struct Builder<'a> {
    repo: &'a Repository,
    index: &'a mut Index,
    files: &'a Files,
    tf_dirs: Map<String, Arc<TfDir>>,
    errors: Vec<StackError>,
    /// The root `atlantis.yaml` the stacks came from (its name), and its projects by directory.
    atlantis: Option<(String, Map<String, Vec<Project>>)>,
}

/// Resolves the commit whose root tree is `tree`.
pub(crate) fn build(repo: &Repository, tree: Oid, index: &mut Index) -> Result<Snapshot> {
    index.begin_build();
    let files = index.list(repo, tree)?;
    let mut b = Builder {
        repo,
        index,
        files: &files,
        tf_dirs: Map::default(),
        errors: Vec::new(),
        atlantis: None,
    };
    let found = b.find_stacks()?;
    let configs = b.stack_configs(&found)?;
    let tg = b.terragrunt(&found)?;
    let (templates, stack_file_errors) = b.terragrunt_stacks(&found)?;
    let (found, configs, tg) = b.without_parent_configs(found, configs, tg, &templates);
    b.errors.extend(stack_file_errors);
    let mut roots: Vec<&str> = found.iter().map(|(dir, _)| dir.as_str()).collect();
    roots.extend(tg.iter().flat_map(|t| t.modules.iter().map(String::as_str)));
    b.load_tf_dirs(&roots)?;
    let mut snapshot = b.assemble(found, configs, tg);
    snapshot.files = files;
    Ok(snapshot)
}

impl Builder<'_> {
    /// Directories with `stack.hcl` or `terragrunt.hcl`; without any, autodiscovery.
    fn find_stacks(&mut self) -> Result<Vec<(String, StackKind)>> {
        let mut found: Vec<(String, StackKind)> = Vec::new();
        let mut stack_hcl = false;
        for (dir, items) in self.files.dirs() {
            let has = |name: &str| file_items(items).any(|(n, _)| n == name);
            stack_hcl |= has("stack.hcl");
            if has("terragrunt.hcl") {
                found.push((dir.to_string(), StackKind::Terragrunt));
            } else if has("stack.hcl") {
                found.push((dir.to_string(), StackKind::Terraform));
            }
        }
        if !stack_hcl {
            // Atlantis users list their projects, Terragrunt units among them.
            let projects = self.atlantis_projects()?;
            if self.atlantis.is_some() {
                found = projects;
            }
        }
        if found.is_empty() && self.atlantis.is_none() {
            // Autodiscovery: every directory of .tf files that nothing uses as a local module.
            let tf: Vec<String> = self
                .files
                .dirs()
                .filter(|(_, items)| file_items(items).any(|(n, _)| tf_role(n).is_some()))
                .map(|(dir, _)| dir.to_string())
                .collect();
            self.load_tf_dirs(&tf.iter().map(String::as_str).collect::<Vec<_>>())?;
            let mut used: Set<&str> = self
                .tf_dirs
                .values()
                .flat_map(|d| d.modules.iter().map(|m| m.dir.as_str()))
                .collect();
            // What links share is part of the directories holding the links: a linked
            // directory, and a directory whose Terraform files are all linked from elsewhere.
            let linked: Set<&str> = self
                .files
                .links
                .iter()
                .filter_map(|l| l.target.as_deref().ok())
                .collect();
            for dir in &tf {
                let mut tf_files = self
                    .files
                    .in_dir(dir)
                    .filter(|(n, _)| tf_role(n).is_some())
                    .peekable();
                let shared = tf_files.peek().is_some()
                    && tf_files.all(|(n, _)| linked.contains(paths::child(dir, n).as_str()));
                if linked.contains(dir.as_str()) || shared {
                    used.insert(dir.as_str());
                }
            }
            found = tf
                .iter()
                .filter(|dir| !used.contains(dir.as_str()))
                .map(|dir| (dir.clone(), StackKind::Terraform))
                .collect();
        }
        found.sort();
        Ok(found)
    }

    fn stack_configs(&mut self, found: &[(String, StackKind)]) -> Result<Vec<Config>> {
        if let Some((_, projects)) = &self.atlantis {
            let config = |dir: &String| match projects.get(dir) {
                Some(p) => Config::Atlantis(Box::new(projects::project_config(p))),
                None => Config::None,
            };
            return Ok(found.iter().map(|(dir, _)| config(dir)).collect());
        }
        let blobs: Vec<Option<Oid>> = found
            .iter()
            .map(|(dir, _)| {
                self.files
                    .in_dir(dir)
                    .find(|(name, _)| *name == "stack.hcl")
                    .map(|(_, id)| id)
            })
            .collect();
        let wanted: Vec<(Oid, Role)> = blobs
            .iter()
            .flatten()
            .map(|id| (*id, Role::StackConfig))
            .collect();
        self.index.ensure(self.repo, &wanted)?;
        let mut configs = Vec::with_capacity(found.len());
        for ((dir, _), blob) in found.iter().zip(blobs) {
            let Some(facts) = blob.and_then(|id| self.index.shared_facts(id, Role::StackConfig))
            else {
                configs.push(Config::None);
                continue;
            };
            for e in &facts.errors {
                let file = paths::child(dir, "stack.hcl");
                self.errors
                    .push(StackError::at(dir, &file, e.line, &e.message));
            }
            configs.push(Config::File(facts));
        }
        Ok(configs)
    }

    /// Puts the pieces together: module closures, names, edges, watch globs, errors.
    fn assemble(
        mut self,
        found: Vec<(String, StackKind)>,
        configs: Vec<Config>,
        tg: Vec<TgStack>,
    ) -> Snapshot {
        let by_path: Map<String, usize> = found
            .iter()
            .enumerate()
            .map(|(i, (dir, _))| (dir.clone(), i))
            .collect();
        let mut module_users: Map<String, Vec<usize>> = Map::default();
        let mut include_users: Map<String, Vec<usize>> = Map::default();
        let mut states: Map<StateKey, usize> = Map::default();
        let mut reads: Vec<Vec<StateKey>> = Vec::with_capacity(found.len());
        let tf_dirs = std::mem::take(&mut self.tf_dirs);
        // Each stack's closure is independent of the others: computed in parallel, merged in
        // path order (so the first stack to claim a state keeps it).
        let parts: Vec<Closure<'_>> = found
            .par_iter()
            .enumerate()
            .map(|(i, (dir, kind))| closure(self.files, &tf_dirs, dir, *kind, &tg[i].modules))
            .collect();
        let mut root_module_users: Map<String, Vec<usize>> = Map::default();
        let mut file_reads: Vec<Vec<StackRead>> = Vec::with_capacity(found.len());
        let mut unresolved: Vec<Vec<super::UnresolvedInput>> = Vec::with_capacity(found.len());
        for (i, part) in parts.into_iter().enumerate() {
            for file in &tg[i].included {
                include_users.entry(file.clone()).or_default().push(i);
            }
            for module in &tg[i].modules {
                let users = root_module_users.entry(module.clone()).or_default();
                if users.last() != Some(&i) {
                    users.push(i);
                }
            }
            let mut named = part.file_reads;
            named.extend(tg[i].file_reads.iter().cloned());
            named.sort();
            named.dedup();
            file_reads.push(named);
            let mut inputs = part.unresolved;
            inputs.extend(tg[i].unresolved.iter().cloned());
            inputs.sort();
            inputs.dedup();
            unresolved.push(inputs);
            for module in part.modules {
                match module_users.get_mut(module) {
                    Some(users) => users.push(i),
                    None => {
                        module_users.insert(module.to_string(), vec![i]);
                    }
                }
            }
            self.errors.extend(part.errors);
            reads.push(part.reads);
            if let Some(key) = part.state {
                states.entry(key).or_insert(i);
            }
        }

        let atlantis_file = self
            .atlantis
            .as_ref()
            .map_or(String::new(), |(file, _)| file.clone());
        let atlantis_file = atlantis_file.as_str();
        let mut names: Map<&str, usize> = Map::default();
        for (i, (dir, _)) in found.iter().enumerate() {
            let name = configs[i].get().name.as_deref().unwrap_or(dir);
            if let Some(&other) = names.get(name) {
                let message = format!("stack name {name:?} is also used by {}", found[other].0);
                let file = configs[i].file(dir, atlantis_file);
                self.errors.push(StackError::at(dir, &file, None, &message));
            } else {
                names.insert(name, i);
            }
        }

        let mut upstreams: Vec<Vec<(usize, EdgeKind)>> = vec![Vec::new(); found.len()];
        let mut pins: Vec<Vec<(usize, String, u32)>> = vec![Vec::new(); found.len()];
        let project_names = match &self.atlantis {
            Some((_, projects)) => projects::project_names(&found, projects),
            None => Map::default(),
        };
        for (i, (dir, _)) in found.iter().enumerate() {
            for (target, line) in &configs[i].get().depends_on {
                // Atlantis names projects only; stack.hcl names a path or a stack name, either
                // optionally with `@environment` for one instance of it.
                let up = match &configs[i] {
                    Config::Atlantis(_) => match project_names.get(target.as_str()) {
                        Some((up, env)) => {
                            if let Some(env) = env {
                                pins[i].push((*up, env.clone(), *line));
                            }
                            Ok(*up)
                        }
                        None => Err(format!("depends_on {target:?}: no such project")),
                    },
                    _ => depends_on_target(dir, target, &by_path, &names).or_else(|err| {
                        match super::split_instance(target) {
                            (base, Some(env)) => {
                                let up = depends_on_target(dir, base, &by_path, &names)?;
                                pins[i].push((up, env.to_string(), *line));
                                Ok(up)
                            }
                            (_, None) => Err(err),
                        }
                    }),
                };
                match up {
                    Ok(up) => upstreams[i].push((up, EdgeKind::DependsOn)),
                    Err(message) => {
                        let file = configs[i].file(dir, atlantis_file);
                        self.errors
                            .push(StackError::at(dir, &file, Some(*line), &message))
                    }
                }
            }
            for (target, file, line) in &tg[i].dependencies {
                match by_path.get(target) {
                    Some(&up) => upstreams[i].push((up, EdgeKind::Dependency)),
                    None => {
                        let message = format!("dependency {target} is not a stack");
                        self.errors
                            .push(StackError::at(dir, file, Some(*line), &message));
                    }
                }
            }
            for key in &reads[i] {
                if let Some(&up) = states.get(key)
                    && up != i
                {
                    upstreams[i].push((up, EdgeKind::RemoteState));
                }
            }
            upstreams[i].sort_by_key(|(up, kind)| (*up, *kind as u8));
            upstreams[i].dedup_by_key(|(up, _)| *up);
        }

        let (watch, watch_owner) = self.watch_globs(&found, &configs);
        let export_full = configs.iter().map(|c| c.get().export_full).collect();
        let included = tg.iter().map(|t| t.included.clone()).collect();
        let stacks: Vec<Stack> = found
            .iter()
            .zip(&configs)
            .enumerate()
            .map(|(i, ((dir, kind), config))| {
                let project = self
                    .atlantis
                    .as_ref()
                    .and_then(|(_, p)| p.get(dir))
                    .and_then(|group| group.first());
                let source = match (project, config, kind) {
                    (Some(_), _, _) => StackSource::Atlantis,
                    (None, _, StackKind::Terragrunt) => StackSource::Terragrunt,
                    (None, Config::File(_), _) => StackSource::StackHcl,
                    (None, _, _) => StackSource::Autodiscovery,
                };
                let config = config.get();
                let watch = match project {
                    Some(p) => p.when_modified.clone(),
                    None => config.watch.iter().map(|(w, _)| w.clone()).collect(),
                };
                Stack {
                    path: dir.clone(),
                    name: config.name.clone().unwrap_or_else(|| dir.clone()),
                    kind: *kind,
                    runner: config.runner.clone(),
                    depends_on: upstreams[i]
                        .iter()
                        .map(|(up, _)| found[*up].0.clone())
                        .collect(),
                    watch,
                    drift_schedule: config.drift_schedule.clone(),
                    auto_apply: config.auto_apply,
                    tags: config.tags.clone(),
                    drift_remediation: config.drift_remediation,
                    unresolved_inputs: std::mem::take(&mut unresolved[i]),
                    source,
                    workspace: project.and_then(|p| p.workspace.clone()),
                    autoplan: project.is_none_or(|p| p.autoplan),
                    terraform_version: project.and_then(|p| p.terraform_version.clone()),
                    environment: None,
                    var_files: Vec::new(),
                    backend_config: Default::default(),
                }
            })
            .collect();
        let mut links = Vec::new();
        for link in &self.files.links {
            match &link.target {
                Ok(target) => links.push((target.clone(), link.path.clone())),
                Err(message) => {
                    let owner = paths::ancestors(paths::parent(&link.path))
                        .find(|d| by_path.contains_key(*d));
                    if let Some(owner) = owner {
                        self.errors
                            .push(StackError::at(owner, &link.path, None, message));
                    }
                }
            }
        }
        let parts: Vec<StackPart<'_>> = stacks
            .iter()
            .enumerate()
            .map(|(i, stack)| StackPart {
                stack,
                environments: &configs[i].get().environments,
                file: configs[i].file(&found[i].0, atlantis_file),
                upstreams: &upstreams[i],
                pins: &pins[i],
            })
            .collect();
        let instances = instances::expand(&parts, &mut self.errors);
        drop(parts);
        let readers = ReadIndex::new(&file_reads, &mut |i, read, message| {
            let at = &read.at;
            self.errors.push(StackError::at(
                &found[i].0,
                &at.file,
                Some(at.line),
                &message,
            ));
        });
        let mut errors = self.errors;
        errors.sort();
        errors.dedup();
        Snapshot {
            instances,
            stacks,
            by_path,
            upstreams,
            errors,
            module_users,
            root_module_users,
            file_reads,
            readers,
            files: Files::default(),
            include_users,
            watch,
            watch_owner,
            export_full,
            included,
            links,
        }
    }

    fn watch_globs(
        &mut self,
        found: &[(String, StackKind)],
        configs: &[Config],
    ) -> (GlobSet, Vec<usize>) {
        let mut builder = GlobSetBuilder::new();
        let mut owners = Vec::new();
        let atlantis_file = self.atlantis.as_ref().map_or("", |(file, _)| file.as_str());
        for (i, (dir, _)) in found.iter().enumerate() {
            for (pattern, line) in &configs[i].get().watch {
                let file = configs[i].file(dir, atlantis_file);
                let glob = paths::join(dir, pattern)
                    .map_err(|_| format!("watch {pattern:?} escapes the repository"))
                    .and_then(|p| {
                        GlobBuilder::new(&p)
                            .literal_separator(true)
                            .build()
                            .map_err(|e| format!("watch {pattern:?}: {e}"))
                    });
                match glob {
                    Ok(glob) => {
                        builder.add(glob);
                        owners.push(i);
                    }
                    Err(message) => {
                        self.errors
                            .push(StackError::at(dir, &file, Some(*line), &message))
                    }
                }
            }
        }
        // Every glob in the set was built on its own already, so the set builds too; should it
        // not, an empty set only loses watch reasons, never anything else.
        let set = builder.build().unwrap_or_else(|_| GlobSet::empty());
        (set, owners)
    }
}

impl StackError {
    pub(crate) fn at(stack: &str, file: &str, line: Option<u32>, message: &str) -> Self {
        StackError {
            stack: stack.to_string(),
            file: file.to_string(),
            line,
            message: message.to_string(),
        }
    }
}

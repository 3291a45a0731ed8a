//! Resolving one commit into a [`Snapshot`]: which directories are stacks, what each is made of
//! (own files, local modules traced recursively, Terragrunt includes, watch globs) and the edges
//! between stacks (`depends_on`, Terragrunt dependencies, `terraform_remote_state`).
//! Stacks come from `stack.hcl` and `terragrunt.hcl`; without any, from a root `atlantis.yaml`;
//! without that, from autodiscovery.

mod projects;
mod terragrunt;

use std::sync::Arc;

use anyhow::Result;
use git2::{Oid, Repository};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use super::atlantis::Project;
use super::eval::Scope;
use super::hash::{Map, Set};
use super::hcl::{FileError, FileFacts, Role, StackConfig};
use super::index::{Files, Index, file_items};
use super::instances::{self, Instances, StackPart};
use super::paths;
use super::resolve::{Closure, ModuleUse, TfDir, closure, depends_on_target, local_source};
use super::state::StateKey;
use super::{EdgeKind, Stack, StackError, StackKind, StackSource};

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
    let (found, configs, tg) = b.without_parent_configs(found, configs, tg);
    let mut roots: Vec<&str> = found.iter().map(|(dir, _)| dir.as_str()).collect();
    roots.extend(tg.iter().flat_map(|t| t.modules.iter().map(String::as_str)));
    b.load_tf_dirs(&roots)?;
    Ok(b.assemble(found, configs, tg))
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

    /// Analyses the Terraform files of these directories and, transitively, of the local
    /// modules they use.
    fn load_tf_dirs(&mut self, dirs: &[&str]) -> Result<()> {
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

    fn tf_dir(&self, dir: &str) -> TfDir {
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
        }
        tf
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
        for (i, part) in parts.into_iter().enumerate() {
            for file in &tg[i].included {
                include_users.entry(file.clone()).or_default().push(i);
            }
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
                    unresolved_inputs: tg[i].unresolved.clone(),
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

/// How a file of a Terraform directory is analysed: HCL, JSON syntax, or not at all.
fn tf_role(name: &str) -> Option<Role> {
    if paths::is_terraform(name) {
        Some(Role::Terraform)
    } else if name.ends_with(".tf.json") || name.ends_with(".tofu.json") {
        Some(Role::TerraformJson)
    } else {
        None
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

//! The affected set between two commits: which stacks a change touches directly and why, every
//! stack downstream of those, all in dependency order.

use std::collections::{BTreeMap, BTreeSet};

use git2::{Oid, Repository};
use serde::Serialize;

use super::discovery::Snapshot;
use super::graph;
use super::instances::Instances;
use super::paths::{self, ModuleFile};
use super::{Index, Location, StackError, snapshot};
use crate::repo::commit_tree;

/// The stacks a change affects, as `tidemark affected` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Affected {
    pub base: Option<String>,
    pub head: String,
    /// In dependency order: each stack after every listed stack it depends on. Removed stacks
    /// come last; they are reported, never planned for destroy automatically.
    pub stacks: Vec<AffectedStack>,
    /// Problems found at `head`; the stacks they name may be incomplete.
    pub errors: Vec<StackError>,
}

/// One affected stack and why it is affected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffectedStack {
    pub path: String,
    pub name: String,
    /// `false` when only an upstream stack changed.
    pub direct: bool,
    pub reasons: Vec<Reason>,
    /// The listed stacks this one depends on: the runs that must apply before it is planned
    /// again. Not printed (the `dependency` reasons say it); for the engine's ordering.
    #[serde(skip)]
    pub depends_on: Vec<String>,
}

/// Why a stack is affected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Reason {
    pub kind: ReasonKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The local module directory, for `module` reasons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The upstream stack, for `dependency` reasons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The expression that reads `file` (`file()`, `templatefile()`, a `"${path.module}/..."`
    /// string), for `file` reasons of files a stack reads by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_by: Option<Location>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasonKind {
    Added,
    Removed,
    File,
    Module,
    Include,
    Watch,
    Dependency,
}

impl Reason {
    fn new(kind: ReasonKind) -> Self {
        Reason {
            kind,
            file: None,
            module: None,
            stack: None,
            read_by: None,
        }
    }

    fn file(kind: ReasonKind, file: &str) -> Self {
        Reason {
            file: Some(file.to_string()),
            ..Reason::new(kind)
        }
    }
}

/// Why the affected set could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum AffectedError {
    /// Stacks that depend on each other in a cycle cannot be ordered. `stacks` names every stack
    /// on a cycle; `rest` is the affected set without them, ordered, so a caller can mark those
    /// failed and carry on with the others.
    #[error("dependency cycle among stacks: {}", stacks.join(", "))]
    Cycle {
        stacks: Vec<String>,
        rest: Box<Affected>,
    },
    #[error(transparent)]
    Git(#[from] anyhow::Error),
}

/// Computes the stacks affected between `base` and `head`. With no `base` (the first commit
/// Tidemark sees) every stack is affected as `added`.
pub fn affected(
    repo: &Repository,
    base: Option<Oid>,
    head: Oid,
    index: Option<&mut Index>,
) -> Result<Affected, AffectedError> {
    let mut scratch = Index::new();
    let index = index.unwrap_or(&mut scratch);
    let head_tree = commit_tree(repo, head)?;
    let now = snapshot(repo, head_tree, index)?;
    let inst = &now.instances;
    let mut direct: BTreeMap<usize, Vec<Reason>> = BTreeMap::new();
    let mut removed: Vec<AffectedStack> = Vec::new();
    let mut orphaned: Vec<(usize, Reason)> = Vec::new();
    match base {
        None => {
            for i in 0..inst.stacks.len() {
                direct.insert(i, vec![Reason::new(ReasonKind::Added)]);
            }
        }
        Some(base) => {
            let base_tree = commit_tree(repo, base)?;
            if base_tree != head_tree {
                let before = snapshot(repo, base_tree, index)?;
                let changed = index.diff(repo, base_tree, head_tree)?;
                compare(&now, &before, &changed, &mut direct, &mut removed);
                orphaned = orphans(&now, &before);
            }
        }
    }

    let mut reasons: BTreeMap<usize, Vec<Reason>> = direct;
    let direct: BTreeSet<usize> = reasons.keys().copied().collect();
    let mut queue: Vec<usize> = direct.iter().copied().collect();
    for (down, reason) in orphaned {
        let entry = reasons.entry(down).or_default();
        if entry.is_empty() {
            queue.push(down);
        }
        entry.push(reason);
    }
    while let Some(up) = queue.pop() {
        for &down in &inst.downstreams[up] {
            let entry = reasons.entry(down).or_default();
            if entry.is_empty() {
                queue.push(down);
            }
            entry.push(Reason {
                stack: Some(inst.stacks[up].path.clone()),
                ..Reason::new(ReasonKind::Dependency)
            });
        }
    }

    let nodes: Vec<usize> = reasons.keys().copied().collect();
    let upstreams = |i: usize| inst.upstreams[i].iter().map(|(u, _)| *u).collect();
    let (ordered, cycle) = match graph::order(&nodes, &upstreams) {
        Ok(ordered) => (ordered, None),
        Err(cyclic) => {
            let rest: Vec<usize> = nodes
                .iter()
                .copied()
                .filter(|n| !cyclic.contains(n))
                .collect();
            let ordered = graph::order(&rest, &upstreams).unwrap_or(rest);
            (ordered, Some(cyclic))
        }
    };
    let listed: BTreeSet<usize> = ordered.iter().copied().collect();
    let mut stacks: Vec<AffectedStack> = ordered
        .into_iter()
        .map(|i| {
            let mut why = reasons.remove(&i).unwrap_or_default();
            why.sort();
            why.dedup();
            let stack = &inst.stacks[i];
            AffectedStack {
                path: stack.path.clone(),
                name: stack.name.clone(),
                direct: direct.contains(&i),
                reasons: why,
                depends_on: inst.upstreams[i]
                    .iter()
                    .filter(|(u, _)| listed.contains(u))
                    .map(|(u, _)| inst.stacks[*u].path.clone())
                    .collect(),
            }
        })
        .collect();
    stacks.extend(removed);
    let result = Affected {
        base: base.map(|b| b.to_string()),
        head: head.to_string(),
        stacks,
        errors: now.errors.clone(),
    };
    match cycle {
        None => Ok(result),
        Some(cyclic) => Err(AffectedError::Cycle {
            stacks: cyclic
                .iter()
                .map(|&i| inst.stacks[i].path.clone())
                .collect(),
            rest: Box::new(result),
        }),
    }
}

/// The directly affected instances: added, removed, and those owning a changed path at
/// either commit (a deleted file belonged to its stack at `base`). A path is attributed to
/// stacks, then to their instances: every instance reads the stack's files, except an
/// environment's variable file, which only its own instance reads.
fn compare(
    now: &Snapshot,
    before: &Snapshot,
    changed: &[String],
    direct: &mut BTreeMap<usize, Vec<Reason>>,
    removed: &mut Vec<AffectedStack>,
) {
    let (ni, bi) = (&now.instances, &before.instances);
    for (i, stack) in ni.stacks.iter().enumerate() {
        if !bi.by_path.contains_key(&stack.path) {
            direct.insert(i, vec![Reason::new(ReasonKind::Added)]);
        }
    }
    for stack in &bi.stacks {
        if !ni.by_path.contains_key(&stack.path) {
            removed.push(AffectedStack {
                path: stack.path.clone(),
                name: stack.name.clone(),
                direct: true,
                reasons: vec![Reason::new(ReasonKind::Removed)],
                depends_on: Vec::new(),
            });
        }
    }
    let mut add = |i: usize, reason: Reason| {
        let entry = direct.entry(i).or_default();
        if entry.first().map(|r| r.kind) != Some(ReasonKind::Added) {
            entry.push(reason);
        }
    };
    for path in changed {
        let mut to_instances = |stack: usize, reason: Reason| {
            for &i in &ni.of_stack[stack] {
                if reads(ni, i, &reason) {
                    add(i, reason.clone());
                }
            }
        };
        attribute(now, path, &mut |i, reason| to_instances(i, reason));
        attribute(before, path, &mut |j, reason| {
            if let Some(&i) = now.by_path.get(&before.stacks[j].path) {
                to_instances(i, reason);
            }
        });
        for &i in ni.var_files.get(path.as_str()).into_iter().flatten() {
            add(i, Reason::file(ReasonKind::File, path));
        }
        for &j in bi.var_files.get(path.as_str()).into_iter().flatten() {
            if let Some(&i) = ni.by_path.get(&bi.stacks[j].path) {
                add(i, Reason::file(ReasonKind::File, path));
            }
        }
    }
}

/// Whether instance `i` reads what `reason` names: a variable file of another instance of the
/// same stack is not its input.
fn reads(instances: &Instances, i: usize, reason: &Reason) -> bool {
    let Some(readers) = reason
        .file
        .as_deref()
        .and_then(|f| instances.var_files.get(f))
    else {
        return true;
    };
    let stack = instances.stack_of[i];
    readers.contains(&i) || !readers.iter().any(|&r| instances.stack_of[r] == stack)
}

/// Instances that depended on an instance now removed: they are planned again too, as
/// downstream of it (their edge to it is gone at `head`, so the head graph alone would miss
/// them).
fn orphans(now: &Snapshot, before: &Snapshot) -> Vec<(usize, Reason)> {
    let (ni, bi) = (&now.instances, &before.instances);
    let mut out = Vec::new();
    for (j, stack) in bi.stacks.iter().enumerate() {
        if ni.by_path.contains_key(&stack.path) {
            continue;
        }
        for &down in &bi.downstreams[j] {
            if let Some(&i) = ni.by_path.get(&bi.stacks[down].path) {
                let reason = Reason {
                    stack: Some(stack.path.clone()),
                    ..Reason::new(ReasonKind::Dependency)
                };
                out.push((i, reason));
            }
        }
    }
    out
}

/// Every stack a path is part of at one commit, and how: as its own file (the deepest stack
/// directory above it), through a local module directory above it (up to that stack), as an
/// included Terragrunt file, or through a watch glob. Markdown is never a stack's file.
fn attribute(snapshot: &Snapshot, path: &str, found: &mut dyn FnMut(usize, Reason)) {
    attribute_at(snapshot, path, path, found);
    for (target, link) in &snapshot.links {
        if let Some(rest) = path.strip_prefix(target.as_str())
            && (rest.is_empty() || rest.starts_with('/'))
        {
            attribute_at(snapshot, &format!("{link}{rest}"), path, found);
        }
    }
}

/// [`attribute`] for a path `seen` where it is used (itself, or through a symbolic link); the
/// reasons name the `path` that changed.
fn attribute_at(snapshot: &Snapshot, seen: &str, path: &str, found: &mut dyn FnMut(usize, Reason)) {
    // Files named by expressions, Markdown included: the reason says which expression reads it,
    // and stands for the plain `file` reason of a stack's own file.
    let mut readers: Vec<usize> = Vec::new();
    snapshot.readers.readers(seen, &mut |i, k| {
        readers.push(i);
        let reason = Reason {
            read_by: Some(snapshot.file_reads[i][k].at.clone()),
            ..Reason::file(ReasonKind::File, path)
        };
        found(i, reason);
    });
    // The stack a path already counts for as its own file: a watch glob of that stack matching
    // it too says nothing more.
    let mut file_of = None;
    if !paths::is_markdown(path) {
        let dir = paths::parent(seen);
        let owner = own_stack(snapshot, dir);
        // A module is the Terraform files directly in its directory.
        let users = match paths::module_file(paths::file_name(seen)) {
            Some(ModuleFile::Config) => snapshot.module_users.get(dir),
            Some(ModuleFile::Root) => snapshot.root_module_users.get(dir),
            None => None,
        };
        for &user in users.into_iter().flatten() {
            if Some(user) != owner {
                let reason = Reason {
                    module: Some(dir.to_string()),
                    ..Reason::file(ReasonKind::Module, path)
                };
                found(user, reason);
            }
        }
        if let Some(stack) = owner {
            if !readers.contains(&stack) {
                found(stack, Reason::file(ReasonKind::File, path));
            }
            file_of = Some(stack);
        }
    }
    for &user in snapshot.include_users.get(seen).into_iter().flatten() {
        found(user, Reason::file(ReasonKind::Include, path));
    }
    for glob in snapshot.watch.matches(seen) {
        if file_of == Some(snapshot.watch_owner[glob]) {
            continue;
        }
        found(
            snapshot.watch_owner[glob],
            Reason::file(ReasonKind::Watch, path),
        );
    }
}

/// The stack a file in `dir` belongs to as its own: the deepest stack directory above it,
/// unless a directory between them holds Terraform files the stack does not call (an unused
/// sub-module, an example): those are modules of their own, not the stack's files.
fn own_stack(snapshot: &Snapshot, dir: &str) -> Option<usize> {
    let mut between: Vec<&str> = Vec::new();
    for d in paths::ancestors(dir) {
        if let Some(&stack) = snapshot.by_path.get(d) {
            let calls = |m: &&str| {
                snapshot
                    .module_users
                    .get(*m)
                    .is_some_and(|users| users.contains(&stack))
            };
            return between.iter().all(calls).then_some(stack);
        }
        if snapshot.files.holds_terraform(d) {
            between.push(d);
        }
    }
    None
}

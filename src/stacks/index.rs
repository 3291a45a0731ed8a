//! The persistent index: what Tidemark already knows about a repository's objects. Tree
//! listings are cached by tree id, file analyses by blob id, and resolved snapshots by root tree
//! id, so a new commit costs what it changed: unchanged subtrees are neither read nor parsed.
//! Listings and analyses can be kept in a file between processes (`disk`).

mod disk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use git2::{Oid, Repository};
use rayon::prelude::*;

use super::discovery::Snapshot;
use super::hash::{Id, Map};
use super::hcl::{FileFacts, Role, analyze};
use super::paths;
use super::resolve::TfDir;
use crate::repo::{EntryKind, TreeItem, diff_trees, read_blob, read_tree};

/// How many resolved snapshots to keep: the base and head of the last few polls.
const SNAPSHOTS: usize = 4;
/// Cached trees and analyses unused for this many snapshot builds are dropped.
const KEEP_GENERATIONS: u64 = 8;

/// The warm cache for one repository. Keep one per repository across polls; it is `Send`, and
/// everything in it is keyed by content (git ids), so it never goes stale, only unused.
#[derive(Default)]
pub struct Index {
    trees: Map<Id, Cached<Arc<[TreeItem]>>>,
    facts: Map<(Id, Role), Cached<Arc<FileFacts>>>,
    /// A directory's resolved Terraform configuration, by its tree id and path (sources are
    /// relative to the path).
    tf_dirs: Map<Id, Cached<DirsAt>>,
    snapshots: Vec<(Oid, Arc<Snapshot>)>,
    generation: u64,
    /// The file the index is kept in, if any, and whether it learned something since it was
    /// loaded or saved.
    disk: Option<PathBuf>,
    dirty: bool,
}

/// A directory's resolution at each path its tree appears at.
type DirsAt = Vec<(String, Arc<TfDir>)>;

struct Cached<T> {
    value: T,
    used: u64,
}

/// The files of one commit, grouped by directory (`"."` is the root). Directories share the
/// index's cached tree listings rather than copying names.
#[derive(Debug, Default)]
pub struct Files {
    /// A directory's tree id is `None` when symbolic links changed what it holds: its contents
    /// then depend on more than the tree, so nothing is cached by it.
    dirs: Map<String, DirFiles>,
    /// Every symbolic link, with what it resolves to.
    pub links: Vec<Link>,
}

/// A directory's tree id (see [`Files::tree_id`]) and entries.
type DirFiles = (Option<Oid>, Arc<[TreeItem]>);

/// A symbolic link in the tree. Links that stay inside the tree are followed: a link to a file
/// is that file's blob under the link's name, a link to a directory is that directory's files
/// under the link's path.
#[derive(Debug, Clone)]
pub struct Link {
    pub path: String,
    /// The path it points to inside the tree, or why it points nowhere there.
    pub target: Result<String, String>,
}

impl Files {
    /// The files (name and blob id) directly in a directory.
    pub fn in_dir(&self, dir: &str) -> impl Iterator<Item = (&str, Oid)> {
        self.dirs
            .get(dir)
            .into_iter()
            .flat_map(|(_, items)| file_items(items))
    }

    /// The tree id of a directory that holds files.
    pub fn tree_id(&self, dir: &str) -> Option<Oid> {
        self.dirs.get(dir).and_then(|(id, _)| *id)
    }

    /// Every directory that holds files, with those files.
    pub fn dirs(&self) -> impl Iterator<Item = (&str, &[TreeItem])> {
        self.dirs
            .iter()
            .map(|(d, (_, items))| (d.as_str(), items.as_ref()))
    }

    /// Whether a directory exists and holds files.
    pub fn has_dir(&self, dir: &str) -> bool {
        self.dirs.contains_key(dir)
    }

    /// The blob id of a file, if it exists.
    pub fn blob(&self, path: &str) -> Option<Oid> {
        let name = paths::file_name(path);
        self.in_dir(paths::parent(path))
            .find(|(n, _)| *n == name)
            .map(|(_, id)| id)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.blob(path).is_some()
    }

    /// Whether a directory holds Terraform configuration files (`*.tf`, `*.tf.json`, ...).
    pub fn holds_terraform(&self, dir: &str) -> bool {
        self.in_dir(dir)
            .any(|(name, _)| paths::module_file(name) == Some(paths::ModuleFile::Config))
    }

    /// Resolves symbolic links (`(path, blob)`) in rounds, since a link may point at a link.
    fn follow_links(&mut self, repo: &Repository, raw: Vec<(String, Oid)>) -> Result<()> {
        let mut pending: Vec<(String, String)> = Vec::new();
        for (path, blob) in raw {
            let bytes = read_blob(repo, blob)?;
            let text = String::from_utf8_lossy(&bytes)
                .trim_end_matches('\n')
                .to_string();
            let inside = if text.starts_with('/') {
                None
            } else {
                paths::join(paths::parent(&path), &text).ok()
            };
            match inside {
                Some(target) => pending.push((path, target)),
                None => self.links.push(Link {
                    path,
                    target: Err(format!("symbolic link to {text} leaves the repository")),
                }),
            }
        }
        for _ in 0..8 {
            let before = pending.len();
            let mut dirs = Vec::new();
            let mut followed = Vec::new();
            pending.retain(|(path, target)| match self.blob(target) {
                Some(blob) => {
                    self.add_file(path, blob);
                    followed.push((path.clone(), target.clone()));
                    false
                }
                None if self.holds_dir(target) => {
                    dirs.push((path.clone(), target.clone()));
                    false
                }
                None => true,
            });
            for (path, target) in &dirs {
                self.alias_dir(path, target);
            }
            for (path, target) in followed.into_iter().chain(dirs) {
                self.links.push(Link {
                    path,
                    target: Ok(target),
                });
            }
            if pending.len() == before {
                break;
            }
        }
        for (path, target) in pending {
            self.links.push(Link {
                path,
                target: Err(format!(
                    "symbolic link to {target}: no such file or directory"
                )),
            });
        }
        Ok(())
    }

    fn add_file(&mut self, path: &str, blob: Oid) {
        let entry = self
            .dirs
            .entry(paths::parent(path).to_string())
            .or_insert_with(|| (None, Arc::from(Vec::new())));
        let mut items = entry.1.to_vec();
        items.push(TreeItem {
            name: paths::file_name(path).to_string(),
            id: blob,
            kind: EntryKind::File,
        });
        *entry = (None, items.into());
    }

    fn holds_dir(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.dirs.keys().any(|d| d == dir || d.starts_with(&prefix))
    }

    fn alias_dir(&mut self, link: &str, target: &str) {
        let copies: Vec<(String, DirFiles)> = self
            .dirs
            .iter()
            .filter_map(|(d, v)| {
                let rest = match d.strip_prefix(target) {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                    _ => return None,
                };
                Some((format!("{link}{rest}"), v.clone()))
            })
            .collect();
        for (dir, value) in copies {
            self.dirs.entry(dir).or_insert(value);
        }
    }
}

/// The files among a tree's entries.
pub fn file_items(items: &[TreeItem]) -> impl Iterator<Item = (&str, Oid)> {
    items
        .iter()
        .filter(|i| i.kind == EntryKind::File)
        .map(|i| (i.name.as_str(), i.id))
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// An index kept in `path` between processes: what the file holds is loaded now when the
    /// file is whole and was written by this build's analysis; anything else is ignored with a
    /// warning and replaced by the next [`Index::save`]. Never an error: the index only saves
    /// work.
    pub fn persistent(path: PathBuf) -> Self {
        let mut index = Self::default();
        match disk::load(&path) {
            Ok(Some(loaded)) => index.restore(loaded),
            Ok(None) => {}
            Err(why) => tracing::warn!(
                "ignoring the stack index {}: {why}; it is rebuilt",
                path.display()
            ),
        }
        index.disk = Some(path);
        index
    }

    /// The file this index is kept in.
    pub fn path(&self) -> Option<&Path> {
        self.disk.as_deref()
    }

    fn restore(&mut self, loaded: disk::Loaded) {
        self.generation = loaded.generation;
        self.trees.reserve(loaded.trees.len());
        for tree in loaded.trees {
            let cached = Cached {
                value: tree.items.into(),
                used: tree.used,
            };
            self.trees.insert(Id(tree.id), cached);
        }
        self.facts.reserve(loaded.facts.len());
        for facts in loaded.facts {
            let cached = Cached {
                value: Arc::new(facts.facts),
                used: facts.used,
            };
            self.facts.insert((Id(facts.id), facts.role), cached);
        }
    }

    /// Writes the listings and analyses to the index's file, when it has one and learned
    /// something since it was loaded or last saved. Returns whether it wrote.
    pub fn save(&mut self) -> Result<bool> {
        let Some(path) = &self.disk else {
            return Ok(false);
        };
        if !self.dirty {
            return Ok(false);
        }
        let payload = disk::Saving {
            generation: self.generation,
            trees: (self.trees.iter())
                .map(|(id, c)| disk::Tree {
                    id: id.0,
                    used: c.used,
                    items: &c.value[..],
                })
                .collect(),
            facts: (self.facts.iter())
                .map(|((id, role), c)| disk::Facts {
                    id: id.0,
                    role: *role,
                    used: c.used,
                    facts: c.value.as_ref(),
                })
                .collect(),
        };
        disk::save(path, &payload)?;
        self.dirty = false;
        Ok(true)
    }

    /// Forgets resolved snapshots, keeping tree listings and file analyses: the next call
    /// resolves again from cached parts (what a never-seen commit costs).
    pub fn forget_snapshots(&mut self) {
        self.snapshots.clear();
    }

    /// A snapshot already resolved for this root tree.
    pub(crate) fn snapshot(&self, tree: Oid) -> Option<Arc<Snapshot>> {
        self.snapshots
            .iter()
            .find(|(id, _)| *id == tree)
            .map(|(_, s)| s.clone())
    }

    pub(crate) fn keep_snapshot(&mut self, tree: Oid, snapshot: Arc<Snapshot>) {
        self.snapshots.retain(|(id, _)| *id != tree);
        self.snapshots.push((tree, snapshot));
        if self.snapshots.len() > SNAPSHOTS {
            self.snapshots.remove(0);
        }
    }

    /// Starts a snapshot build and forgets what recent builds did not use.
    pub(crate) fn begin_build(&mut self) {
        self.generation += 1;
        if self.generation.is_multiple_of(KEEP_GENERATIONS) {
            let oldest = self.generation.saturating_sub(KEEP_GENERATIONS);
            let before = self.trees.len() + self.facts.len();
            self.trees.retain(|_, c| c.used >= oldest);
            self.facts.retain(|_, c| c.used >= oldest);
            self.tf_dirs.retain(|_, c| c.used >= oldest);
            self.dirty |= self.trees.len() + self.facts.len() != before;
        }
    }

    /// Lists every file under a root tree, reading only trees not seen before.
    pub(crate) fn list(&mut self, repo: &Repository, root: Oid) -> Result<Files> {
        let mut files = Files::default();
        let mut pending = vec![(root, paths::ROOT.to_string())];
        let mut links = Vec::new();
        while let Some((tree, dir)) = pending.pop() {
            let items = self.tree(repo, tree)?;
            let mut has_files = false;
            for item in items.iter() {
                match item.kind {
                    EntryKind::File => has_files = true,
                    EntryKind::Dir => pending.push((item.id, paths::child(&dir, &item.name))),
                    EntryKind::Link => links.push((paths::child(&dir, &item.name), item.id)),
                    EntryKind::Other => {}
                }
            }
            if has_files {
                files.dirs.insert(dir, (Some(tree), items));
            }
        }
        if !links.is_empty() {
            files.follow_links(repo, links)?;
        }
        Ok(files)
    }

    /// The file paths that differ between two root trees, from cached listings.
    pub(crate) fn diff(&mut self, repo: &Repository, old: Oid, new: Oid) -> Result<Vec<String>> {
        diff_trees(&mut |id| self.tree(repo, id), old, new)
    }

    /// A directory's Terraform configuration resolved by an earlier build, if its tree is the
    /// same.
    pub(crate) fn tf_dir(&mut self, tree: Oid, dir: &str) -> Option<Arc<TfDir>> {
        let generation = self.generation;
        // Keyed by tree id alone so a lookup allocates nothing; the same tree at several paths
        // (copied directories) is rare, so a short list per id is searched.
        let cached = self.tf_dirs.get_mut(&Id(tree))?;
        let (_, tf) = cached.value.iter().find(|(path, _)| path == dir)?;
        cached.used = generation;
        Some(tf.clone())
    }

    pub(crate) fn keep_tf_dir(&mut self, tree: Oid, dir: &str, value: Arc<TfDir>) {
        let used = self.generation;
        let cached = self.tf_dirs.entry(Id(tree)).or_insert_with(|| Cached {
            value: Vec::new(),
            used,
        });
        cached.used = used;
        cached.value.retain(|(path, _)| path != dir);
        cached.value.push((dir.to_string(), value));
    }

    fn tree(&mut self, repo: &Repository, id: Oid) -> Result<Arc<[TreeItem]>> {
        let generation = self.generation;
        if let Some(cached) = self.trees.get_mut(&Id(id)) {
            cached.used = generation;
            return Ok(cached.value.clone());
        }
        let items: Arc<[TreeItem]> = read_tree(repo, id)?.into();
        self.dirty = true;
        self.trees.insert(
            Id(id),
            Cached {
                value: items.clone(),
                used: generation,
            },
        );
        Ok(items)
    }

    /// Makes sure every `(blob, role)` is analysed, parsing the missing ones in parallel.
    pub(crate) fn ensure(&mut self, repo: &Repository, wanted: &[(Oid, Role)]) -> Result<()> {
        let generation = self.generation;
        let mut missing = Vec::new();
        for &(id, role) in wanted {
            match self.facts.get_mut(&(Id(id), role)) {
                Some(cached) => cached.used = generation,
                None => missing.push((id, role)),
            }
        }
        missing.sort_unstable_by_key(|(id, role)| (*id, *role as u8));
        missing.dedup();
        self.dirty |= !missing.is_empty();
        for ((id, role), facts) in parse_all(repo, &missing)? {
            self.facts.insert(
                (Id(id), role),
                Cached {
                    value: Arc::new(facts),
                    used: generation,
                },
            );
        }
        Ok(())
    }

    /// The analysis of a blob, shared; [`Index::ensure`] must have been called for it.
    pub(crate) fn shared_facts(&self, blob: Oid, role: Role) -> Option<Arc<FileFacts>> {
        self.facts.get(&(Id(blob), role)).map(|c| c.value.clone())
    }

    /// The analysis of a blob; [`Index::ensure`] must have been called for it.
    pub(crate) fn facts(&self, blob: Oid, role: Role) -> Option<&FileFacts> {
        self.facts.get(&(Id(blob), role)).map(|c| c.value.as_ref())
    }
}

/// Reads and parses blobs in parallel. A `git2::Repository` is not `Sync`, so each chunk of
/// work opens its own handle on the same object database (cheap: packs are mapped, not read).
fn parse_all(repo: &Repository, keys: &[(Oid, Role)]) -> Result<Vec<((Oid, Role), FileFacts)>> {
    let threads = rayon::current_num_threads().max(1);
    if keys.len() < 64 || threads == 1 {
        return keys
            .iter()
            .map(|&(id, role)| Ok(((id, role), analyze(&read_blob(repo, id)?, role))))
            .collect();
    }
    let path = repo.path().to_path_buf();
    let chunk = keys.len().div_ceil(threads * 4);
    let parsed: Vec<Result<Vec<_>>> = keys
        .par_chunks(chunk)
        .map(|chunk| {
            let repo = Repository::open(&path)?;
            chunk
                .iter()
                .map(|&(id, role)| Ok(((id, role), analyze(&read_blob(&repo, id)?, role))))
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(keys.len());
    for part in parsed {
        out.extend(part?);
    }
    Ok(out)
}

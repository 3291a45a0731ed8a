//! Reading a commit's files straight from git objects: tree listings, blob contents and the
//! paths two commits differ in. Nothing is checked out, so any repository works, bare or not.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use git2::{ObjectType, Oid, Repository};

/// What a tree entry is, as far as reading configuration goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    /// A symbolic link (mode 120000): a blob holding the target path.
    Link,
    /// Submodules and anything else that has no content in this repository.
    Other,
}

/// One entry of a single tree object (not recursive).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeItem {
    pub name: String,
    #[serde(with = "oid_bytes")]
    pub id: Oid,
    pub kind: EntryKind,
}

/// The id of the root tree of a commit.
pub fn commit_tree(repo: &Repository, commit: Oid) -> Result<Oid> {
    let commit = repo
        .find_commit(commit)
        .with_context(|| format!("reading commit {commit}"))?;
    Ok(commit.tree_id())
}

/// Lists one tree object. Entries whose names are not UTF-8 are skipped: no stack path could
/// name them.
pub fn read_tree(repo: &Repository, tree: Oid) -> Result<Vec<TreeItem>> {
    let tree = repo
        .find_tree(tree)
        .with_context(|| format!("reading tree {tree}"))?;
    let mut items = Vec::with_capacity(tree.len());
    for entry in tree.iter() {
        let Ok(name) = entry.name() else { continue };
        let kind = match entry.kind() {
            Some(ObjectType::Blob) if entry.filemode() == 0o120000 => EntryKind::Link,
            Some(ObjectType::Blob) => EntryKind::File,
            Some(ObjectType::Tree) => EntryKind::Dir,
            _ => EntryKind::Other,
        };
        items.push(TreeItem {
            name: name.to_string(),
            id: entry.id(),
            kind,
        });
    }
    Ok(items)
}

/// Reads a blob's bytes.
pub fn read_blob(repo: &Repository, blob: Oid) -> Result<Vec<u8>> {
    let blob = repo
        .find_blob(blob)
        .with_context(|| format!("reading blob {blob}"))?;
    Ok(blob.content().to_vec())
}

/// Every path that differs between two trees, old and new side alike (a rename is a removal and
/// an addition). Sorted, without duplicates. Identical subtrees are skipped by id, so this costs
/// what the change costs, not what the repository weighs.
pub fn changed_paths(repo: &Repository, old_tree: Oid, new_tree: Oid) -> Result<Vec<String>> {
    let old = repo
        .find_tree(old_tree)
        .with_context(|| format!("reading tree {old_tree}"))?;
    let new = repo
        .find_tree(new_tree)
        .with_context(|| format!("reading tree {new_tree}"))?;
    let diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .context("diffing trees")?;
    let mut paths = Vec::with_capacity(diff.deltas().len() * 2);
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if !file.exists() {
                continue;
            }
            if let Some(path) = file.path_bytes().and_then(|p| std::str::from_utf8(p).ok()) {
                paths.push(path.to_string());
            }
        }
    }
    paths.sort_unstable();
    paths.dedup();
    Ok(paths)
}

/// Every file path that differs between two trees, like [`changed_paths`], computed from tree
/// listings supplied by `read` (which may cache them): identical subtrees are skipped by id, so
/// with a warm cache this touches only the trees along changed paths.
pub fn diff_trees(
    read: &mut dyn FnMut(Oid) -> Result<Arc<[TreeItem]>>,
    old: Oid,
    new: Oid,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    diff_into(read, Some(old), Some(new), "", &mut out)?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn diff_into(
    read: &mut dyn FnMut(Oid) -> Result<Arc<[TreeItem]>>,
    old: Option<Oid>,
    new: Option<Oid>,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let old_items = old.map(&mut *read).transpose()?;
    let new_items = new.map(&mut *read).transpose()?;
    let mut names: BTreeMap<&str, [Option<&TreeItem>; 2]> = BTreeMap::new();
    for (side, items) in [&old_items, &new_items].into_iter().enumerate() {
        for item in items.iter().flat_map(|i| i.iter()) {
            names.entry(item.name.as_str()).or_default()[side] = Some(item);
        }
    }
    for (name, [before, after]) in names {
        if before.map(|i| (i.id, i.kind)) == after.map(|i| (i.id, i.kind)) {
            continue;
        }
        let path = format!("{prefix}{name}");
        let tree = |i: Option<&TreeItem>| i.filter(|i| i.kind == EntryKind::Dir).map(|i| i.id);
        let file = |i: Option<&TreeItem>| {
            i.is_some_and(|i| matches!(i.kind, EntryKind::File | EntryKind::Link))
        };
        if file(before) || file(after) {
            out.push(path.clone());
        }
        let (old_tree, new_tree) = (tree(before), tree(after));
        if old_tree.is_some() || new_tree.is_some() {
            diff_into(read, old_tree, new_tree, &format!("{path}/"), out)?;
        }
    }
    Ok(())
}

/// A git id stored as its 20 raw bytes.
pub mod oid_bytes {
    use git2::Oid;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(id: &Oid, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_bytes(id.as_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Oid, D::Error> {
        let bytes: &[u8] = Deserialize::deserialize(input)?;
        Oid::from_bytes(bytes).map_err(D::Error::custom)
    }
}

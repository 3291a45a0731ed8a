//! Git access: mirror a remote into the data dir, fetch, resolve revisions, and export a
//! commit's tree. Reading objects goes through git2; fetching goes through the `git` command so
//! that https and ssh remotes work with the system's git, its credential helpers and TLS stack.

mod export;
mod merge;
mod mirror;
mod tree;

pub use export::{Export, Exported, Selection, export, export_tree, same_content};
pub use merge::{merge_base, merge_commit};
pub use mirror::{FetchError, Mirror};
pub use tree::{EntryKind, TreeItem, changed_paths, commit_tree, diff_trees, read_blob, read_tree};

use std::path::Path;

use anyhow::{Context, Result};
use git2::{Oid, Repository};

/// Opens any git repository: a working copy (its `.git` is found) or a bare one.
pub fn open(path: &Path) -> Result<Repository> {
    Repository::open(path).with_context(|| format!("opening git repository {}", path.display()))
}

/// Resolves anything git resolves (a branch, a tag, `HEAD~2`, a sha) to a commit id.
pub fn resolve_commit(repo: &Repository, rev: &str) -> Result<Oid> {
    let object = repo
        .revparse_single(rev)
        .with_context(|| format!("resolving revision {rev:?}"))?;
    let commit = object
        .peel_to_commit()
        .with_context(|| format!("revision {rev:?} is not a commit"))?;
    Ok(commit.id())
}

/// Who wrote a commit and what it says: what the run history shows next to a sha.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommitInfo {
    pub sha: String,
    pub author: String,
    pub message: String,
}

/// Reads a commit's author and the first line of its message.
pub fn commit_info(repo: &Repository, id: Oid) -> Result<CommitInfo> {
    let commit = repo
        .find_commit(id)
        .with_context(|| format!("reading commit {id}"))?;
    let author = commit.author();
    Ok(CommitInfo {
        sha: id.to_string(),
        author: format!(
            "{} <{}>",
            author.name().unwrap_or("unknown"),
            author.email().unwrap_or("")
        ),
        message: commit.summary().ok().flatten().unwrap_or("").to_string(),
    })
}

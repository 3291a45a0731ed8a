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
pub use tree::{
    EntryKind, TreeItem, changed_paths, commit_tree, diff_trees, oid_bytes, read_blob, read_tree,
};

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

/// A commit a deployment carried: its committer time and the first line of its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub sha: String,
    pub committed_at: chrono::DateTime<chrono::Utc>,
    pub summary: String,
}

/// The commits reachable from `head` and not from `since` (the commit deployed before), newest
/// first and at most `cap` of them; without `since` (a first deployment, or one whose commit is
/// gone) only `head` itself.
pub fn carried_commits(
    repo: &Repository,
    head: Oid,
    since: Option<Oid>,
    cap: usize,
) -> Result<Vec<Carried>> {
    let carried = |id: Oid| -> Result<Carried> {
        let commit = repo
            .find_commit(id)
            .with_context(|| format!("reading commit {id}"))?;
        let committed_at = chrono::DateTime::from_timestamp(commit.committer().when().seconds(), 0)
            .unwrap_or_default();
        Ok(Carried {
            sha: id.to_string(),
            committed_at,
            summary: commit.summary().ok().flatten().unwrap_or("").to_string(),
        })
    };
    if since == Some(head) {
        return Ok(Vec::new());
    }
    let Some(since) = since.filter(|s| repo.find_commit(*s).is_ok()) else {
        return Ok(vec![carried(head)?]);
    };
    let mut walk = repo.revwalk().context("walking history")?;
    walk.push(head)
        .with_context(|| format!("walking from {head}"))?;
    walk.hide(since)
        .with_context(|| format!("hiding {since}"))?;
    let mut found = Vec::new();
    for id in walk.take(cap) {
        found.push(carried(id.context("walking history")?)?);
    }
    Ok(found)
}

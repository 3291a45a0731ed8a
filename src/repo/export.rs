//! Writes a commit's tree, or the part of it a run reads, into a directory, straight from the
//! object database: runs need files on disk (terraform reads `../modules`), discovery never
//! does. Paths keep their place relative to the root, so `../../modules/x` still resolves.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use git2::{ObjectType, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};
use globset::{GlobBuilder, GlobSetBuilder};

/// What to export of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// The whole tree.
    Full,
    /// Only these paths.
    Only(Selection),
}

/// A part of a tree: directories with everything below them (except `prune`), single files,
/// and glob patterns (`/`-separated from the root; `*` stays within one component).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `"."` is the root.
    pub dirs: Vec<String>,
    pub files: Vec<String>,
    pub globs: Vec<String>,
    /// Directories left out when met below one of `dirs` (nested stacks).
    pub prune: BTreeSet<String>,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    pub files: usize,
    /// The first path components written, sorted; empty for a full export.
    pub top: Vec<String>,
    pub full: bool,
}

impl Exported {
    /// A one-line account for a run's log, bounded in length however many prefixes there are.
    pub fn describe(&self) -> String {
        if self.full {
            return format!("exported the whole tree ({} files)", self.files);
        }
        let mut listed = String::new();
        let mut shown = 0;
        for top in &self.top {
            if listed.len() + top.len() > 200 {
                break;
            }
            if !listed.is_empty() {
                listed.push_str(", ");
            }
            listed.push_str(top);
            shown += 1;
        }
        if shown < self.top.len() {
            listed.push_str(&format!(" and {} more", self.top.len() - shown));
        }
        format!(
            "exported the stack's closure: {} files under {}",
            self.files, listed
        )
    }
}

/// Exports `what` of `commit` below `dest` (which must exist).
pub fn export(repo: &Repository, commit: Oid, dest: &Path, what: &Export) -> Result<Exported> {
    let tree = repo
        .find_commit(commit)
        .with_context(|| format!("reading commit {commit}"))?
        .tree()?;
    let selection = match what {
        Export::Full => {
            let files = write_tree(repo, &tree, "", dest, true, &mut |_, _| true)?;
            return Ok(Exported {
                files,
                top: Vec::new(),
                full: true,
            });
        }
        Export::Only(selection) => selection,
    };
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut top: BTreeSet<String> = BTreeSet::new();
    let mut dirs: Vec<&str> = selection.dirs.iter().map(String::as_str).collect();
    dirs.sort_unstable();
    dirs.dedup();
    for dir in &dirs {
        let Some(sub) = subtree(repo, &tree, dir)? else {
            continue;
        };
        let base = if *dir == "." {
            String::new()
        } else {
            format!("{dir}/")
        };
        fs::create_dir_all(dest.join(base.trim_end_matches('/')))?;
        let mut keep = |rel: &str, is_tree: bool| {
            if is_tree {
                return !selection.prune.contains(rel.trim_end_matches('/'));
            }
            written.insert(rel.to_string())
        };
        write_tree(repo, &sub, &base, dest, true, &mut keep)?;
        top.insert(first_component(dir).to_string());
    }
    for file in &selection.files {
        if written.contains(file) {
            continue;
        }
        let Ok(entry) = tree.get_path(Path::new(file)) else {
            continue;
        };
        if entry.kind() == Some(ObjectType::Blob) {
            let blob = repo.find_blob(entry.id())?;
            make_parent(dest, file)
                .and_then(|()| write_entry(dest, file, blob.content(), entry.filemode()))
                .with_context(|| format!("exporting {file}"))?;
            written.insert(file.clone());
            top.insert(first_component(file).to_string());
        }
    }
    if !selection.globs.is_empty() {
        let mut builder = GlobSetBuilder::new();
        for glob in &selection.globs {
            builder.add(GlobBuilder::new(glob).literal_separator(true).build()?);
        }
        let set = builder.build()?;
        let mut roots: Vec<&str> = selection.globs.iter().map(|g| literal_dir(g)).collect();
        roots.sort_unstable();
        roots.dedup();
        for root in roots {
            let Some(sub) = subtree(repo, &tree, root)? else {
                continue;
            };
            let base = if root == "." {
                String::new()
            } else {
                format!("{root}/")
            };
            let mut keep = |rel: &str, is_tree: bool| {
                is_tree
                    || (set.is_match(rel) && !written.contains(rel) && {
                        top.insert(first_component(rel).to_string());
                        written.insert(rel.to_string())
                    })
            };
            write_tree(repo, &sub, &base, dest, false, &mut keep)?;
        }
    }
    Ok(Exported {
        files: written.len(),
        top: top.into_iter().collect(),
        full: false,
    })
}

/// Whether `what` reads the same content at commits `a` and `b`: the same tree ids for its
/// directories and glob roots, the same blob ids for its files. Conservative: a change anywhere
/// below an exported directory (a pruned nested stack included) counts as a change.
pub fn same_content(repo: &Repository, a: Oid, b: Oid, what: &Export) -> Result<bool> {
    let tree_a = repo
        .find_commit(a)
        .with_context(|| format!("reading commit {a}"))?
        .tree()?;
    let tree_b = repo
        .find_commit(b)
        .with_context(|| format!("reading commit {b}"))?
        .tree()?;
    let selection = match what {
        Export::Full => return Ok(tree_a.id() == tree_b.id()),
        Export::Only(selection) => selection,
    };
    let id_at = |tree: &Tree, path: &str| -> Option<Oid> {
        if path == "." {
            return Some(tree.id());
        }
        tree.get_path(Path::new(path)).ok().map(|entry| entry.id())
    };
    let roots = selection.globs.iter().map(|g| literal_dir(g));
    for path in selection
        .dirs
        .iter()
        .map(String::as_str)
        .chain(selection.files.iter().map(String::as_str))
        .chain(roots)
    {
        if id_at(&tree_a, path) != id_at(&tree_b, path) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn first_component(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// The directory a glob's matches all lie under: its components before the first with a
/// wildcard (`"."` when that is the first).
fn literal_dir(glob: &str) -> &str {
    let wild = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    match glob[..wild].rfind('/') {
        Some(i) => &glob[..i],
        None => ".",
    }
}

/// The tree at `dir` (`"."` for the root), or `None` when there is none.
fn subtree<'r>(repo: &'r Repository, root: &Tree<'r>, dir: &str) -> Result<Option<Tree<'r>>> {
    if dir == "." {
        return Ok(Some(root.clone()));
    }
    match root.get_path(Path::new(dir)) {
        Ok(entry) if entry.kind() == Some(ObjectType::Tree) => {
            Ok(Some(repo.find_tree(entry.id())?))
        }
        _ => Ok(None),
    }
}

/// Exports every blob of `commit` below `dest` (which must exist). Symlinks are written as
/// symlinks only when their target stays inside the tree; submodules are skipped.
pub fn export_tree(repo: &Repository, commit: Oid, dest: &Path) -> Result<()> {
    export(repo, commit, dest, &Export::Full).map(|_| ())
}

/// Writes the blobs of `tree` (found at `base`, `""` or ending in `/`) below `dest` that `keep`
/// accepts; `keep` is asked about each directory too (`false` skips it) with its path and a
/// trailing `/`. With `mkdir`, each kept directory is created as it is met (`base` must exist);
/// without, parent directories are created as files need them (for sparse matches). Returns the
/// files written.
fn write_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    base: &str,
    dest: &Path,
    mkdir: bool,
    keep: &mut dyn FnMut(&str, bool) -> bool,
) -> Result<usize> {
    let mut failure: Option<anyhow::Error> = None;
    let mut count = 0;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            return TreeWalkResult::Skip;
        };
        let rel = format!("{base}{dir}{name}");
        let result = (|| -> Result<TreeWalkResult> {
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    if !keep(&format!("{rel}/"), true) {
                        return Ok(TreeWalkResult::Skip);
                    }
                    if mkdir {
                        // Selected directories may overlap (a module inside a stack).
                        match fs::create_dir(dest.join(&rel)) {
                            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                                return Err(e.into());
                            }
                            _ => {}
                        }
                    }
                }
                Some(ObjectType::Blob) if keep(&rel, false) => {
                    let blob = repo.find_blob(entry.id())?;
                    if !mkdir {
                        make_parent(dest, &rel)?;
                    }
                    write_entry(dest, &rel, blob.content(), entry.filemode())?;
                    count += 1;
                }
                _ => {}
            }
            Ok(TreeWalkResult::Ok)
        })();
        match result {
            Ok(next) => next,
            Err(err) => {
                failure = Some(err.context(format!("exporting {rel}")));
                TreeWalkResult::Abort
            }
        }
    })
    .or_else(|err| if failure.is_some() { Ok(()) } else { Err(err) })?;
    match failure {
        Some(err) => Err(err),
        None => Ok(count),
    }
}

fn make_parent(dest: &Path, rel: &str) -> Result<()> {
    if let Some(parent) = dest.join(rel).parent() {
        fs::create_dir_all(parent)?;
    }
    Ok(())
}

fn write_entry(dest: &Path, rel: &str, content: &[u8], mode: i32) -> Result<()> {
    let path = dest.join(rel);
    match mode {
        0o120000 => write_symlink(dest, rel, content),
        mode => write_file(&path, content, mode == 0o100755),
    }
}

fn write_file(path: &Path, content: &[u8], executable: bool) -> Result<()> {
    fs::write(path, content)?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// A symlink whose target leaves the exported tree would let a repository make a run read host
/// files, so such links are refused rather than written.
fn write_symlink(dest: &Path, rel: &str, target: &[u8]) -> Result<()> {
    let target = std::str::from_utf8(target).context("symlink target is not utf-8")?;
    let mut depth: i64 = rel.matches('/').count() as i64;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            break;
        }
    }
    if target.starts_with('/') || depth < 0 {
        bail!("symlink {rel} points outside the repository ({target})");
    }
    std::os::unix::fs::symlink(target, dest.join(rel))?;
    Ok(())
}

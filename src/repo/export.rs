//! Writes a commit's whole tree into a directory, straight from the object database: runs need
//! files on disk (terraform reads `../modules`), discovery never does.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

/// Exports every blob of `commit` below `dest` (which must exist). Symlinks are written as
/// symlinks only when their target stays inside the tree; submodules are skipped.
pub fn export_tree(repo: &Repository, commit: Oid, dest: &Path) -> Result<()> {
    let tree = repo
        .find_commit(commit)
        .with_context(|| format!("reading commit {commit}"))?
        .tree()?;
    let mut failure: Option<anyhow::Error> = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            return TreeWalkResult::Skip;
        };
        let rel = format!("{dir}{name}");
        let result = (|| -> Result<()> {
            let path = dest.join(&rel);
            match entry.kind() {
                Some(ObjectType::Tree) => fs::create_dir_all(&path)?,
                Some(ObjectType::Blob) => {
                    let blob = repo.find_blob(entry.id())?;
                    match entry.filemode() {
                        0o120000 => write_symlink(dest, &rel, blob.content())?,
                        mode => write_file(&path, blob.content(), mode == 0o100755)?,
                    }
                }
                _ => {}
            }
            Ok(())
        })();
        match result {
            Ok(()) => TreeWalkResult::Ok,
            Err(err) => {
                failure = Some(err.context(format!("exporting {rel}")));
                TreeWalkResult::Abort
            }
        }
    })
    .or_else(|err| if failure.is_some() { Ok(()) } else { Err(err) })?;
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
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

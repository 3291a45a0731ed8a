//! The shared provider cache: providers a run's `init` installed are kept once per provider
//! version, so later runs link them instead of downloading hundreds of megabytes again.
//!
//! Terraform's own plugin cache is not safe when several `init`s share it, so no run writes the
//! shared directory. Each run gets a private `TF_PLUGIN_CACHE_DIR` in its workspace holding the
//! cached provider versions as directories of links into the shared cache, which the sandbox
//! sees read-only. What `init` had to download lands in the private directory; after `init`,
//! Tidemark copies each new version into a temporary directory beside the shared cache and
//! renames it into place, so a reader sees a version whole or not at all, and two runs that
//! fetched the same version keep the first.
//!
//! Layout (terraform's): `HOST/NAMESPACE/TYPE/VERSION/OS_ARCH/terraform-provider-...`.

use std::io;
use std::path::{Path, PathBuf};

/// Fills `private` with the provider versions held in `shared`: real directories down to
/// `OS_ARCH` (terraform does not follow a linked version directory when it scans its cache),
/// each file a link into `shared`. Returns how many versions.
pub fn prepare(shared: &Path, private: &Path) -> io::Result<usize> {
    std::fs::create_dir_all(private)?;
    let mut linked = 0;
    for version in versions(shared)? {
        let rel = version.strip_prefix(shared).expect("below shared");
        link_tree(&version, &private.join(rel))?;
        linked += 1;
    }
    Ok(linked)
}

/// Recreates the directories of `from` at `to`, with a link per file.
fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if std::fs::metadata(&src)?.is_dir() {
            link_tree(&src, &dst)?;
        } else {
            match std::os::unix::fs::symlink(&src, &dst) {
                Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Copies the provider versions `init` installed into `private` (those `shared` does not hold
/// yet) into `shared`. Returns the versions added, as `HOST/NS/TYPE/VERSION`.
pub fn harvest(private: &Path, shared: &Path) -> io::Result<Vec<String>> {
    let mut added = Vec::new();
    for version in versions(private)? {
        let rel = version.strip_prefix(private).expect("below private");
        let target = shared.join(rel);
        if target.exists() {
            continue;
        }
        let parent = target.parent().expect("a version has a parent");
        std::fs::create_dir_all(parent)?;
        let temp = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempdir_in(parent)?;
        copy_tree(&version, temp.path())?;
        match std::fs::rename(temp.path(), &target) {
            Ok(()) => {
                // Renamed away: nothing left for the guard to remove.
                let _ = temp.keep();
                added.push(rel.display().to_string());
            }
            // Another run put the same version there first: keep theirs.
            Err(_) if target.exists() => {}
            Err(err) => return Err(err),
        }
    }
    Ok(added)
}

/// The `HOST/NAMESPACE/TYPE/VERSION` directories (or links) below `root`, sorted; none when
/// `root` does not exist. Entries starting with `.` (a copy in progress) are skipped.
fn versions(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut level = vec![root.to_path_buf()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for dir in &level {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            for entry in entries {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let path = entry.path();
                if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                    next.push(path);
                }
            }
        }
        level = next;
    }
    level.sort();
    Ok(level)
}

/// Copies a directory tree, following links (terraform links a provider it found in an
/// unpacked mirror; the cache keeps a copy of its own), keeping file permissions.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if std::fs::metadata(&src)?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(root: &Path, version: &str) -> PathBuf {
        let dir = root.join(format!(
            "registry.terraform.io/hashicorp/null/{version}/linux_amd64"
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("terraform-provider-null"), version).expect("write");
        dir
    }

    #[test]
    fn new_versions_move_into_the_shared_cache_and_later_runs_link_them() {
        let root = tempfile::tempdir().expect("tempdir");
        let (shared, first, second) = (
            root.path().join("shared"),
            root.path().join("run1"),
            root.path().join("run2"),
        );
        assert_eq!(prepare(&shared, &first).expect("prepare"), 0);
        provider(&first, "2.1.2");
        assert_eq!(
            harvest(&first, &shared).expect("harvest"),
            ["registry.terraform.io/hashicorp/null/2.1.2"]
        );
        let cached = shared.join("registry.terraform.io/hashicorp/null/2.1.2/linux_amd64");
        assert_eq!(
            std::fs::read_to_string(cached.join("terraform-provider-null")).expect("read"),
            "2.1.2"
        );

        // The next run sees it as a link, installs another version, and only that one moves.
        assert_eq!(prepare(&shared, &second).expect("prepare"), 1);
        let link = second
            .join("registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        provider(&second, "3.0.0");
        assert_eq!(
            harvest(&second, &shared).expect("harvest"),
            ["registry.terraform.io/hashicorp/null/3.0.0"]
        );
        // A version already there (another run was first) is left alone.
        provider(&first, "3.0.0");
        assert!(harvest(&first, &shared).expect("harvest").is_empty());
        let leftovers: Vec<_> =
            std::fs::read_dir(shared.join("registry.terraform.io/hashicorp/null"))
                .expect("read")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect();
        assert!(
            leftovers.iter().all(|n| !n.starts_with('.')),
            "{leftovers:?}"
        );
    }
}

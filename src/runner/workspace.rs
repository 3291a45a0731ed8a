//! Workspaces: a fresh directory per run holding the part of the commit's tree the run reads
//! (the stack's closure at its place in the tree, so `../modules` resolves; or all of it), the plan file and a private HOME. Dropping a workspace removes it, so a run
//! that ends in any way (finished, failed, cancelled, panicked) cleans up after itself; a
//! process that died without dropping is handled by [`Workspace::sweep_stale`] at the next
//! start.
//!
//! A workspace is named `ws-<pid>-<start time>-<random>`: the pid alone is not enough to tell
//! whether the owner still lives, because pids are reused (a container restarts as pid 1 every
//! time). The start time from `/proc/<pid>/stat` makes the owner unique.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A run's private directory; removed when dropped.
#[derive(Debug)]
pub struct Workspace {
    path: PathBuf,
    exported: Option<crate::repo::Exported>,
}

impl Workspace {
    /// Creates an empty workspace under `root` (created when missing).
    pub fn create(root: &Path) -> Result<Workspace> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating workspaces root {}", root.display()))?;
        let pid = std::process::id();
        let started = start_time(pid).unwrap_or(0);
        let suffix: u64 = rand::random();
        let path = root.join(format!("ws-{pid}-{started}-{suffix:016x}"));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating workspace {}", path.display()))?;
        let workspace = Workspace {
            path,
            exported: None,
        };
        for dir in [workspace.tree(), workspace.out(), workspace.home()] {
            std::fs::create_dir(&dir)
                .with_context(|| format!("creating workspace {}", dir.display()))?;
        }
        Ok(workspace)
    }

    /// Creates a workspace holding `commit`'s whole tree.
    pub fn export(root: &Path, repo: &git2::Repository, commit: git2::Oid) -> Result<Workspace> {
        Workspace::export_only(root, repo, commit, &crate::repo::Export::Full)
    }

    /// Creates a workspace holding `what` of `commit`'s tree.
    pub fn export_only(
        root: &Path,
        repo: &git2::Repository,
        commit: git2::Oid,
        what: &crate::repo::Export,
    ) -> Result<Workspace> {
        let mut workspace = Workspace::create(root)?;
        let exported = crate::repo::export(repo, commit, &workspace.tree(), what)
            .with_context(|| format!("exporting commit {commit} into a workspace"))?;
        workspace.exported = Some(exported);
        Ok(workspace)
    }

    /// Creates a workspace holding what a run of `stack` reads at `commit` (its closure, or the
    /// whole tree for `export = "full"` or a stack the commit does not have). Pass one
    /// [`crate::stacks::Index`] across the stacks of a commit: the commit is analysed once.
    pub fn export_stack(
        root: &Path,
        repo: &git2::Repository,
        commit: git2::Oid,
        stack: &str,
        index: Option<&mut crate::stacks::Index>,
    ) -> Result<Workspace> {
        Ok(Workspace::export_instance(root, repo, commit, stack, index)?.0)
    }

    /// [`Workspace::export_stack`] for an instance path (`stacks/app@prod`): also returns the
    /// instance as discovered at `commit` (its directory, environment and variable files), or
    /// `None` when the commit has no such instance.
    pub fn export_instance(
        root: &Path,
        repo: &git2::Repository,
        commit: git2::Oid,
        stack: &str,
        index: Option<&mut crate::stacks::Index>,
    ) -> Result<(Workspace, Option<crate::stacks::Stack>)> {
        let inputs = crate::stacks::run_inputs(repo, commit, stack, index)?;
        let (what, instance) = match inputs {
            Some(inputs) => (inputs.export, Some(inputs.stack)),
            None => (crate::repo::Export::Full, None),
        };
        Ok((Workspace::export_only(root, repo, commit, &what)?, instance))
    }

    /// What was exported into the workspace, when it was exported.
    pub fn exported(&self) -> Option<&crate::repo::Exported> {
        self.exported.as_ref()
    }

    /// The workspace directory: the only path a sandboxed step may write.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the repository's tree is exported.
    pub fn tree(&self) -> PathBuf {
        self.path.join("tree")
    }

    /// Where plan files are written.
    pub fn out(&self) -> PathBuf {
        self.path.join("out")
    }

    /// The steps' HOME (terraform keeps `.terraform.d` there).
    pub fn home(&self) -> PathBuf {
        self.path.join("home")
    }

    /// Removes the workspaces under `root` whose owning process is gone; returns how many.
    /// Entries that are not workspaces are left alone.
    pub fn sweep_stale(root: &Path) -> Result<usize> {
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err).with_context(|| format!("reading {}", root.display())),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((pid, started)) = name.to_str().and_then(parse_name) else {
                continue;
            };
            if start_time(pid) == Some(started) {
                continue;
            }
            let path = entry.path();
            // A sandbox should have died with its service (bubblewrap's --die-with-parent),
            // but one reparented to init has been seen to live on: end it before its files go.
            let killed = kill_processes_in(&path);
            if killed > 0 {
                tracing::warn!(workspace = %path.display(), killed, "killed processes left from a dead run");
            }
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale workspace {}", path.display()))?;
            tracing::info!(workspace = %path.display(), "removed a stale workspace");
            removed += 1;
        }
        Ok(removed)
    }
}

/// SIGKILLs every process that runs in `workspace` (its working directory is inside it) or
/// names it on its command line (the sandbox's bubblewrap); returns how many.
fn kill_processes_in(workspace: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let needle = workspace.display().to_string();
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd")).ok();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let inside = cwd.is_some_and(|c| c.starts_with(workspace))
            || String::from_utf8_lossy(&cmdline).contains(&needle);
        if inside {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
    }
    killed
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(workspace = %self.path.display(), %err, "could not remove a workspace");
        }
    }
}

/// `ws-<pid>-<start>-<random>` → (pid, start).
fn parse_name(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix("ws-")?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let started = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((pid, started))
}

/// The start time of a live process (field 22 of `/proc/<pid>/stat`, in clock ticks since
/// boot), or `None` when there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_is_removed_when_dropped() {
        let root = tempfile::tempdir().expect("tempdir");
        let ws = Workspace::create(root.path()).expect("create");
        std::fs::write(ws.tree().join("main.tf"), "").expect("write");
        let path = ws.path().to_path_buf();
        assert!(path.join("out").is_dir() && path.join("home").is_dir());
        drop(ws);
        assert!(!path.exists());
    }

    #[test]
    fn sweeping_removes_only_workspaces_of_dead_processes() {
        let root = tempfile::tempdir().expect("tempdir");
        let live = Workspace::create(root.path()).expect("create");
        // A pid that exists but with another start time is a reused pid: its workspace is stale.
        let me = std::process::id();
        let reused = root.path().join(format!("ws-{me}-1-00"));
        // pid_max is at most 2^22, so this pid cannot exist.
        let dead = root.path().join("ws-4194305-77-00");
        let other = root.path().join("not-a-workspace");
        for dir in [&reused, &dead, &other] {
            std::fs::create_dir_all(dir.join("tree")).expect("mkdir");
        }
        assert_eq!(Workspace::sweep_stale(root.path()).expect("sweep"), 2);
        assert!(live.path().exists() && other.exists());
        assert!(!reused.exists() && !dead.exists());
        assert_eq!(
            Workspace::sweep_stale(&root.path().join("missing")).expect("sweep"),
            0
        );
    }
}

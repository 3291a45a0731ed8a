//! The sandbox's read-only system view: what a step needs to run the host's ordinary tools
//! (`local-exec` runs `/bin/sh`, the `external` data source and providers call `jq`, `aws`,
//! `kubectl`), and nothing else of the host.
//!
//! The view is `/usr` read-only, the top-level links of a merged-`/usr` host (`/bin -> usr/bin`)
//! recreated as links (or, on a host that keeps them as directories, bound read-only), the
//! certificate stores, `ld.so.cache`, `/etc/alternatives`, and a generated `/etc/passwd` and
//! `/etc/group` holding only the step's own user. The rest of `/etc` (`shadow`, host keys), home
//! directories, `/root`, `/var`, `/srv` and Tidemark's data directory stay invisible; the network
//! files (`/etc/resolv.conf`, `/etc/hosts`) are added by the sandbox only when a step has the
//! network.

use std::path::{Path, PathBuf};

/// One mount of the system view, in the order bubblewrap applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemMount {
    /// A host directory bound read-only at its own path.
    Bind(PathBuf),
    /// Bound read-only at its own path when it exists on the host.
    BindTry(PathBuf),
    /// A link recreated inside the sandbox (`/bin -> usr/bin`).
    Symlink { target: PathBuf, link: PathBuf },
    /// A generated file bound read-only at `dest`.
    File { source: PathBuf, dest: PathBuf },
}

impl SystemMount {
    /// Whether a host path bound at its own path is already visible through this mount, so
    /// binding it again would be redundant (or, under a link, would fail).
    pub fn covers(&self, path: &Path) -> bool {
        match self {
            SystemMount::Bind(dir) | SystemMount::BindTry(dir) => path.starts_with(dir),
            SystemMount::Symlink { link, .. } => path.starts_with(link),
            SystemMount::File { dest, .. } => path == dest,
        }
    }
}

/// Top-level directories that merged-`/usr` hosts keep as links into `/usr`.
const TOP_LEVEL: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// Host files that programs read and that hold no secret: certificate stores, the loader cache,
/// Debian's alternatives (`/usr/bin/awk -> /etc/alternatives/awk`), the time zone.
const ETC_FILES: &[&str] = &[
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/ld.so.cache",
    "/etc/alternatives",
    "/etc/localtime",
];

/// The system view for a step whose generated `passwd` and `group` files are `passwd` and
/// `group`. Reads only the kind of each top-level path (link or directory) on this host.
pub fn system_view(passwd: &Path, group: &Path) -> Vec<SystemMount> {
    let mut mounts = vec![SystemMount::Bind(PathBuf::from("/usr"))];
    for top in TOP_LEVEL {
        let path = Path::new(top);
        match std::fs::read_link(path) {
            Ok(target) => mounts.push(SystemMount::Symlink {
                target,
                link: path.to_path_buf(),
            }),
            Err(_) if path.is_dir() => mounts.push(SystemMount::Bind(path.to_path_buf())),
            Err(_) => {}
        }
    }
    mounts.extend(
        ETC_FILES
            .iter()
            .map(|f| SystemMount::BindTry(PathBuf::from(f))),
    );
    mounts.push(SystemMount::File {
        source: passwd.to_path_buf(),
        dest: PathBuf::from("/etc/passwd"),
    });
    mounts.push(SystemMount::File {
        source: group.to_path_buf(),
        dest: PathBuf::from("/etc/group"),
    });
    mounts
}

/// `/etc/passwd` and `/etc/group` text naming only the step's user (whose home is the run's
/// private HOME) and `nobody`: tools that look their user up (ssh, git, Python's `getpass`)
/// work, and nothing of the host's accounts shows.
pub fn accounts(uid: u32, gid: u32, home: &Path) -> (String, String) {
    let user = if uid == 0 { "root" } else { "tidemark" };
    let passwd = format!(
        "{user}:x:{uid}:{gid}:Tidemark run:{}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        home.display()
    );
    let group = format!("{user}:x:{gid}:\nnogroup:x:65534:\n");
    (passwd, group)
}

/// Writes the step user's `/etc/passwd` and `/etc/group` into `workspace/system` (outside the
/// exported tree) and returns the system view that binds them.
pub(super) fn prepare(workspace: &Path, home: &Path) -> anyhow::Result<Vec<SystemMount>> {
    use anyhow::Context;
    let dir = workspace.join("system");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Inside the sandbox the steps' user is always the unprivileged one of its namespace.
    let id = super::sandbox::SANDBOX_UID;
    let (passwd, group) = accounts(id, id, home);
    let write = |name: &str, text: &str| {
        let file = dir.join(name);
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        Ok::<_, anyhow::Error>(file)
    };
    let passwd = write("passwd", &passwd)?;
    let group = write("group", &group)?;
    Ok(system_view(&passwd, &group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_binds_usr_first_and_generates_the_accounts() {
        let view = system_view(
            Path::new("/ws/system/passwd"),
            Path::new("/ws/system/group"),
        );
        assert_eq!(view[0], SystemMount::Bind("/usr".into()));
        assert!(view.contains(&SystemMount::File {
            source: "/ws/system/passwd".into(),
            dest: "/etc/passwd".into()
        }));
        // Whatever this host's layout, /bin is in the view as a link or a directory.
        assert!(view.iter().any(|m| m.covers(Path::new("/bin/sh"))));
        assert!(!view.iter().any(|m| m.covers(Path::new("/etc/shadow"))));
        assert!(!view.iter().any(|m| m.covers(Path::new("/root"))));
        assert!(!view.iter().any(|m| m.covers(Path::new("/home"))));
    }

    #[test]
    fn accounts_name_only_the_step_user() {
        let (passwd, group) = accounts(1000, 1000, Path::new("/ws/home"));
        assert_eq!(
            passwd,
            "tidemark:x:1000:1000:Tidemark run:/ws/home:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(group, "tidemark:x:1000:\nnogroup:x:65534:\n");
        assert!(accounts(0, 0, Path::new("/h")).0.starts_with("root:x:0:0:"));
    }
}

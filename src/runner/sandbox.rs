//! The sandbox: the command line that wraps one step in prlimit and bubblewrap, as a pure
//! function tested alone, and finding the host programs it needs.
//!
//! Why it is built this way:
//! - Limits are applied by the util-linux `prlimit` command, which sets them on itself and
//!   then execs bubblewrap, so every process of the step inherits them. Doing it in Rust would
//!   need `pre_exec`, which is unsafe and forbidden here.
//! - bubblewrap gets a fresh `/proc`, `/dev` and `/tmp`, the workspace read-write, the tool,
//!   its helpers and the provider mirror read-only at their own paths, and no other host path.
//!   `--unshare-all` leaves the tool only loopback unless the step allows the network.
//! - `--die-with-parent` and the new PID namespace are what let [`super::process`] stop a
//!   step completely by killing one process group.
//! - Steps run as an unprivileged user ([`SANDBOX_UID`]) of their own user namespace, even when
//!   Tidemark runs as root: the workspace (owned by Tidemark's user outside) is theirs inside,
//!   and a step that escapes the sandbox lands without root.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::definition::Limits;
use super::system::SystemMount;

/// The uid and gid steps run as inside bubblewrap's user namespace (mapped to Tidemark's own
/// user outside it).
pub const SANDBOX_UID: u32 = 1000;

/// Whether steps run inside bubblewrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Every step in bubblewrap; refuse to run when it is missing.
    #[default]
    Bubblewrap,
    /// No sandbox (limits still apply). Only when the config says `sandbox = "none"`; every run
    /// warns.
    None,
}

/// The host programs the sandbox needs, found once.
#[derive(Debug, Clone)]
pub struct SandboxTools {
    pub prlimit: PathBuf,
    pub bwrap: Option<PathBuf>,
}

/// What is missing for a sandbox to start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "bubblewrap (bwrap) is not installed: install it (Debian package `bubblewrap`, or \
         scripts/install-deps.sh) or set sandbox = \"none\" in the config to run steps unsandboxed"
    )]
    NoBubblewrap,
    #[error("prlimit (util-linux) is not installed: it applies the sandbox's resource limits")]
    NoPrlimit,
}

impl SandboxTools {
    /// Finds prlimit and bwrap on PATH; with `SandboxMode::Bubblewrap`, bwrap must exist.
    pub fn find(mode: SandboxMode) -> Result<SandboxTools, SandboxError> {
        let prlimit = find_on_path("prlimit").ok_or(SandboxError::NoPrlimit)?;
        let bwrap = find_on_path("bwrap");
        if mode == SandboxMode::Bubblewrap && bwrap.is_none() {
            return Err(SandboxError::NoBubblewrap);
        }
        Ok(SandboxTools {
            prlimit,
            bwrap: bwrap.filter(|_| mode == SandboxMode::Bubblewrap),
        })
    }
}

/// Looks a program up on Tidemark's PATH, the way a shell would; absolute paths are kept.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Everything that decides the command line of one sandboxed step.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The only writable host path; bound at its own path.
    pub workspace: PathBuf,
    /// The directory the step runs in (inside the workspace).
    pub cwd: PathBuf,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Host paths bound read-only at their own path; they must exist.
    pub ro_binds: Vec<PathBuf>,
    /// Host paths bound read-only when they exist.
    pub ro_binds_try: Vec<PathBuf>,
    /// The read-only system view ([`super::system`]); empty when the runner turns it off.
    pub system: Vec<SystemMount>,
    pub network: bool,
    pub limits: Limits,
}

/// Files a tool needs to resolve names and check TLS when the network is shared (Debian and
/// RHEL layouts; `/etc/ssl/certs` links into `/usr/share/ca-certificates`).
const NETWORK_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/etc/pki/tls/certs",
];

/// The full argv: `prlimit <limits> -- [bwrap <isolation> --] program args`. With `bwrap`
/// `None` (sandbox mode none) only the limits apply.
pub fn command_line(prlimit: &Path, bwrap: Option<&Path>, spec: &SandboxSpec) -> Vec<OsString> {
    let limits = &spec.limits;
    let mut argv: Vec<OsString> = vec![
        prlimit.into(),
        format!("--as={}", limits.address_space_bytes).into(),
        format!("--cpu={}", limits.cpu_seconds).into(),
        format!("--fsize={}", limits.file_size_bytes).into(),
        format!("--nofile={}", limits.open_files).into(),
        "--".into(),
    ];
    if let Some(bwrap) = bwrap {
        argv.push(bwrap.into());
        let flags = [
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
        ];
        argv.extend(flags.iter().map(OsString::from));
        let id = SANDBOX_UID.to_string();
        argv.extend(["--uid", &id, "--gid", &id].map(OsString::from));
        if spec.network {
            argv.push("--share-net".into());
        }
        // The fresh mounts come first: binds below /tmp (a workspace under the system temp
        // dir) must land on top of the new /tmp, not be hidden by it.
        argv.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"].map(OsString::from));
        for mount in &spec.system {
            let [flag, source, dest]: [&std::ffi::OsStr; 3] = match mount {
                SystemMount::Bind(dir) => ["--ro-bind".as_ref(), dir.as_ref(), dir.as_ref()],
                SystemMount::BindTry(path) => {
                    ["--ro-bind-try".as_ref(), path.as_ref(), path.as_ref()]
                }
                SystemMount::Symlink { target, link } => {
                    ["--symlink".as_ref(), target.as_ref(), link.as_ref()]
                }
                SystemMount::File { source, dest } => {
                    ["--ro-bind".as_ref(), source.as_ref(), dest.as_ref()]
                }
            };
            argv.extend([flag.into(), source.into(), dest.into()]);
        }
        // What the system view shows already is not bound twice (under a recreated link it
        // could not be).
        let shown = |path: &Path| spec.system.iter().any(|m| m.covers(path));
        let mut bind = |flag: &str, path: &Path| {
            argv.extend([flag.into(), path.into(), path.into()]);
        };
        bind("--bind", &spec.workspace);
        for path in spec.ro_binds.iter().filter(|p| !shown(p)) {
            bind("--ro-bind", path);
        }
        for path in spec.ro_binds_try.iter().filter(|p| !shown(p)) {
            bind("--ro-bind-try", path);
        }
        if spec.network {
            for file in NETWORK_FILES.iter().map(Path::new).filter(|p| !shown(p)) {
                bind("--ro-bind-try", file);
            }
        }
        argv.extend(["--chdir".into(), spec.cwd.clone().into(), "--".into()]);
    }
    argv.push(spec.program.clone().into());
    argv.extend(spec.args.iter().map(OsString::from));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(network: bool) -> SandboxSpec {
        SandboxSpec {
            workspace: "/tmp/ws".into(),
            cwd: "/tmp/ws/tree/stack".into(),
            program: "/opt/tf/terraform".into(),
            args: vec!["plan".into(), "-out=/tmp/ws/out/plan".into()],
            ro_binds: vec!["/opt/tf/terraform".into(), "/opt/mirror".into()],
            ro_binds_try: vec!["/usr".into()],
            system: Vec::new(),
            network,
            limits: Limits {
                address_space_bytes: 1 << 32,
                cpu_seconds: 60,
                file_size_bytes: 1 << 30,
                open_files: 1024,
            },
        }
    }

    fn check(argv: Vec<OsString>, expected: &str) {
        let argv: Vec<String> = argv
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(argv.join(" "), expected);
    }

    #[test]
    fn bubblewrap_command_line() {
        check(
            command_line(
                Path::new("/usr/bin/prlimit"),
                Some(Path::new("/usr/bin/bwrap")),
                &spec(false),
            ),
            "/usr/bin/prlimit --as=4294967296 --cpu=60 --fsize=1073741824 --nofile=1024 -- \
             /usr/bin/bwrap --unshare-all --unshare-user --die-with-parent --new-session --cap-drop ALL \
             --uid 1000 --gid 1000 --proc /proc --dev /dev --tmpfs /tmp --bind /tmp/ws /tmp/ws \
             --ro-bind /opt/tf/terraform /opt/tf/terraform --ro-bind /opt/mirror /opt/mirror \
             --ro-bind-try /usr /usr --chdir /tmp/ws/tree/stack -- \
             /opt/tf/terraform plan -out=/tmp/ws/out/plan",
        );
    }

    #[test]
    fn network_shares_the_namespace_and_resolver_files() {
        let argv = command_line(Path::new("prlimit"), Some(Path::new("bwrap")), &spec(true));
        let text: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(text.contains(&"--share-net".to_string()));
        assert!(
            text.windows(2)
                .any(|w| w == ["--ro-bind-try", "/etc/resolv.conf"])
        );
        let offline = command_line(Path::new("prlimit"), Some(Path::new("bwrap")), &spec(false));
        assert!(!offline.iter().any(|a| a == "--share-net"));
    }

    #[test]
    fn the_system_view_comes_first_and_is_not_bound_twice() {
        let mut spec = spec(true);
        spec.ro_binds_try = vec!["/usr/lib".into(), "/lib64".into(), "/opt/extra".into()];
        spec.system = vec![
            SystemMount::Bind("/usr".into()),
            SystemMount::Symlink {
                target: "usr/lib64".into(),
                link: "/lib64".into(),
            },
            SystemMount::BindTry("/etc/ssl".into()),
            SystemMount::File {
                source: "/tmp/ws/system/passwd".into(),
                dest: "/etc/passwd".into(),
            },
        ];
        let argv: Vec<String> = command_line(Path::new("prlimit"), Some(Path::new("bwrap")), &spec)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let text = argv.join(" ");
        assert!(
            text.contains(
                "--tmpfs /tmp --ro-bind /usr /usr --symlink usr/lib64 /lib64 \
                 --ro-bind-try /etc/ssl /etc/ssl --ro-bind /tmp/ws/system/passwd /etc/passwd \
                 --bind /tmp/ws /tmp/ws"
            ),
            "{text}"
        );
        assert!(
            text.contains("--ro-bind-try /opt/extra /opt/extra"),
            "{text}"
        );
        assert!(!text.contains("/usr/lib /usr/lib"), "{text}");
        assert!(!text.contains("--ro-bind-try /lib64"), "{text}");
    }

    #[test]
    fn no_sandbox_keeps_only_the_limits() {
        check(
            command_line(Path::new("prlimit"), None, &spec(false)),
            "prlimit --as=4294967296 --cpu=60 --fsize=1073741824 --nofile=1024 -- \
             /opt/tf/terraform plan -out=/tmp/ws/out/plan",
        );
    }
}

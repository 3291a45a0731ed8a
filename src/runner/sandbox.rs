//! The sandbox: the command line that wraps one step in prlimit and bubblewrap (a pure
//! function, tested alone), and the process that runs it with a wall-clock timeout,
//! cancellation and an output cap.
//!
//! Why it is built this way:
//! - Limits are applied by the util-linux `prlimit` command, which sets them on itself and
//!   then execs bubblewrap, so every process of the step inherits them. Doing it in Rust would
//!   need `pre_exec`, which is unsafe and forbidden here.
//! - The step is started in its own process group. bubblewrap runs the tool in a new PID
//!   namespace with `--die-with-parent`: killing the group kills bubblewrap, the kernel then
//!   kills the namespace's init and with it every process the tool started, even ones that
//!   called `setsid` (`--new-session` gives the tool its own session so it cannot reach our
//!   terminal).
//! - Output is read as it comes, so a chatty tool never blocks on a full pipe, and each line
//!   is redacted before it leaves this module.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::definition::Limits;
use super::redact::Redactor;
use super::{LogLine, Stream};

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
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
        ];
        argv.extend(flags.iter().map(OsString::from));
        if spec.network {
            argv.push("--share-net".into());
        }
        // The fresh mounts come first: binds below /tmp (a workspace under the system temp
        // dir) must land on top of the new /tmp, not be hidden by it.
        argv.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"].map(OsString::from));
        let mut bind = |flag: &str, path: &Path| {
            argv.extend([flag.into(), path.into(), path.into()]);
        };
        bind("--bind", &spec.workspace);
        for path in &spec.ro_binds {
            bind("--ro-bind", path);
        }
        for path in &spec.ro_binds_try {
            bind("--ro-bind-try", path);
        }
        if spec.network {
            for file in NETWORK_FILES {
                bind("--ro-bind-try", Path::new(file));
            }
        }
        argv.extend(["--chdir".into(), spec.cwd.clone().into(), "--".into()]);
    }
    argv.push(spec.program.clone().into());
    argv.extend(spec.args.iter().map(OsString::from));
    argv
}

/// How a step's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code (bubblewrap passes the tool's code through; a tool killed by a
    /// signal shows as 128 + the signal).
    Code(i32),
    /// It was killed by a signal outside our control.
    Signal(i32),
    TimedOut,
    Cancelled,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => write!(f, "signal {signal}"),
            Exit::TimedOut => f.write_str("timed out"),
            Exit::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// The result of running one step.
#[derive(Debug)]
pub struct StepRun {
    pub exit: Exit,
    /// The whole stdout, when the caller asked to capture it as data instead of logging it.
    pub stdout: Option<Vec<u8>>,
    /// The last lines of stderr, redacted.
    pub stderr_tail: String,
    pub elapsed: Duration,
}

/// How one step's output is handled.
#[derive(Debug, Clone)]
pub struct OutputPolicy {
    /// Bytes of log kept per step: the first half streams live, the last half at the end.
    pub cap: usize,
    /// Keep stdout as data (for `show -json`) instead of logging it.
    pub capture_stdout: bool,
}

/// Captured data larger than this fails the step rather than exhausting memory.
const CAPTURE_LIMIT: usize = 512 * 1024 * 1024;
/// Lines longer than this are split, so a tool printing without newlines cannot grow memory.
const MAX_LINE: usize = 16 * 1024;
/// Bytes of stderr kept for the failure message.
const STDERR_TAIL: usize = 4 * 1024;
/// After a kill or the tool's exit, how long to wait for the pipes to close.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// A step's process: its full command line, its exact environment and its directory.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub argv: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// Set on the outer process too, so that a run without bubblewrap (no `--chdir`) still
    /// starts in the stack's directory.
    pub cwd: PathBuf,
    pub timeout: Duration,
}

/// Runs an invocation, streaming redacted output lines for `step` into `logs`.
/// The process group is killed at `timeout` or on `cancel`. Spawn failures are errors; every
/// way the process itself ends is an [`Exit`].
pub async fn run(
    step: &str,
    invocation: &Invocation,
    output: &OutputPolicy,
    redactor: &Redactor,
    logs: &mpsc::Sender<LogLine>,
    cancel: &CancellationToken,
) -> std::io::Result<StepRun> {
    let started = Instant::now();
    let (program, args) = invocation
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command line"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&invocation.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let mut guard = GroupGuard(pgid);
    let (tx, mut rx) = mpsc::channel::<(Stream, Vec<u8>)>(64);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(read_lines(stdout, Stream::Stdout, tx.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(read_lines(stderr, Stream::Stderr, tx.clone()));
    }
    drop(tx);

    let mut sink = Sink::new(step, output, redactor, logs);
    let deadline = tokio::time::Instant::now() + invocation.timeout;
    let mut ended: Option<Exit> = None;
    let mut exited = std::pin::pin!(exit_without_reaping(pgid));
    let mut has_exited = false;
    let mut grace = std::pin::pin!(tokio::time::sleep(Duration::MAX / 4));
    loop {
        tokio::select! {
            _ = cancel.cancelled(), if ended.is_none() => {
                kill_group(pgid);
                ended = Some(Exit::Cancelled);
                grace.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
            }
            _ = tokio::time::sleep_until(deadline), if ended.is_none() => {
                kill_group(pgid);
                ended = Some(Exit::TimedOut);
                grace.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
            }
            _ = &mut exited, if !has_exited => {
                // The tool is gone; what is left in the pipes drains quickly unless something
                // it started still holds them (possible only without bubblewrap).
                has_exited = true;
                if ended.is_none() {
                    grace.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
                }
            }
            _ = &mut grace => break,
            line = rx.recv() => match line {
                Some((stream, bytes)) => sink.line(stream, bytes).await,
                None => break,
            },
        }
    }
    if !has_exited {
        exited.await;
    }
    // The leader has exited but is not reaped yet, so its pid (the group id) cannot have been
    // reused: killing the group now reaches only what the step left behind (possible without
    // bubblewrap; with it the PID namespace is already gone). Then reap.
    kill_group(pgid);
    let status = child.wait().await?;
    guard.0 = None;
    let exit = match ended {
        Some(exit) => exit,
        None => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(signal)) => Exit::Signal(signal),
                (None, None) => Exit::Signal(0),
            }
        }
    };
    let (stdout, stderr_tail) = sink.finish().await;
    Ok(StepRun {
        exit,
        stdout,
        stderr_tail,
        elapsed: started.elapsed(),
    })
}

/// Resolves when the process `pid` has exited, without reaping it (`waitid` with `WNOWAIT`).
async fn exit_without_reaping(pid: Option<i32>) {
    let Some(pid) = pid else { return };
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    let wait = move || waitid(Id::Pid(Pid::from_raw(pid)), flags);
    // An error (the task panicked, or ECHILD) means there is nothing left to wait for.
    let _ = tokio::task::spawn_blocking(wait).await;
}

/// Kills the step's process group if the future running it is dropped half-way (a caller
/// aborting its task instead of cancelling): `kill_on_drop` alone reaches only the direct
/// child. Disarmed once the leader is reaped, after which its id may belong to someone else.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid {
        // ESRCH (the group is already gone) is the expected outcome after a normal exit.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Reads a pipe and sends it on line by line (lines split at `MAX_LINE`).
async fn read_lines(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::Sender<(Stream, Vec<u8>)>,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in splitter.push(&buf[..n]) {
            if tx.send((stream, line)).await.is_err() {
                return;
            }
        }
    }
    if let Some(line) = splitter.finish() {
        let _ = tx.send((stream, line)).await;
    }
}

/// Splits a byte stream into lines without the newline, cutting lines longer than `MAX_LINE`.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let room = MAX_LINE - self.partial.len();
            match bytes.iter().take(room).position(|b| *b == b'\n') {
                Some(i) => {
                    self.partial.extend_from_slice(&bytes[..i]);
                    lines.push(std::mem::take(&mut self.partial));
                    bytes = &bytes[i + 1..];
                }
                None if bytes.len() >= room => {
                    self.partial.extend_from_slice(&bytes[..room]);
                    lines.push(std::mem::take(&mut self.partial));
                    bytes = &bytes[room..];
                }
                None => {
                    self.partial.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
        lines
    }

    fn finish(self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then_some(self.partial)
    }
}

/// Where lines go: captured stdout, the stderr tail, and the capped log.
struct Sink<'a> {
    step: &'a str,
    policy: &'a OutputPolicy,
    redactor: &'a Redactor,
    logs: &'a mpsc::Sender<LogLine>,
    captured: Option<Vec<u8>>,
    capture_overflow: bool,
    streamed: usize,
    tail: VecDeque<(Stream, String)>,
    tail_bytes: usize,
    omitted: usize,
    stderr_tail: VecDeque<String>,
    stderr_bytes: usize,
}

impl<'a> Sink<'a> {
    fn new(
        step: &'a str,
        policy: &'a OutputPolicy,
        redactor: &'a Redactor,
        logs: &'a mpsc::Sender<LogLine>,
    ) -> Self {
        Sink {
            step,
            policy,
            redactor,
            logs,
            captured: policy.capture_stdout.then(Vec::new),
            capture_overflow: false,
            streamed: 0,
            tail: VecDeque::new(),
            tail_bytes: 0,
            omitted: 0,
            stderr_tail: VecDeque::new(),
            stderr_bytes: 0,
        }
    }

    async fn line(&mut self, stream: Stream, bytes: Vec<u8>) {
        if stream == Stream::Stdout
            && let Some(captured) = &mut self.captured
        {
            if captured.len() + bytes.len() < CAPTURE_LIMIT {
                captured.extend_from_slice(&bytes);
                captured.push(b'\n');
            } else {
                self.capture_overflow = true;
            }
            return;
        }
        let text = self
            .redactor
            .redact(&String::from_utf8_lossy(&bytes))
            .into_owned();
        if stream == Stream::Stderr {
            self.stderr_bytes += text.len() + 1;
            self.stderr_tail.push_back(text.clone());
            while self.stderr_bytes > STDERR_TAIL && self.stderr_tail.len() > 1 {
                let dropped = self.stderr_tail.pop_front().map_or(0, |l| l.len() + 1);
                self.stderr_bytes -= dropped;
            }
        }
        let size = text.len() + 1;
        if self.streamed + size <= self.policy.cap / 2 && self.tail.is_empty() {
            self.streamed += size;
            self.send(stream, text).await;
            return;
        }
        // Past the first half of the cap, keep a rolling tail of the second half.
        self.tail_bytes += size;
        self.tail.push_back((stream, text));
        while self.tail_bytes > self.policy.cap / 2 {
            let Some((_, old)) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.len() + 1;
            self.omitted += old.len() + 1;
        }
    }

    async fn send(&self, stream: Stream, text: String) {
        let line = LogLine {
            step: self.step.to_string(),
            stream,
            text,
        };
        // A dropped receiver means nobody stores the log any more; the step still runs to its
        // end so that its outcome is known.
        let _ = self.logs.send(line).await;
    }

    async fn finish(mut self) -> (Option<Vec<u8>>, String) {
        if self.omitted > 0 {
            let note = format!("[output over the cap: {} bytes omitted]", self.omitted);
            self.send(Stream::System, note).await;
        }
        for (stream, text) in std::mem::take(&mut self.tail) {
            self.send(stream, text).await;
        }
        if self.capture_overflow {
            self.captured = None;
            self.stderr_tail
                .push_back(format!("[stdout over {CAPTURE_LIMIT} bytes: not kept]"));
        }
        let tail = Vec::from(std::mem::take(&mut self.stderr_tail)).join("\n");
        (self.captured, tail)
    }
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
             /usr/bin/bwrap --unshare-all --die-with-parent --new-session --cap-drop ALL \
             --proc /proc --dev /dev --tmpfs /tmp --bind /tmp/ws /tmp/ws \
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
    fn no_sandbox_keeps_only_the_limits() {
        check(
            command_line(Path::new("prlimit"), None, &spec(false)),
            "prlimit --as=4294967296 --cpu=60 --fsize=1073741824 --nofile=1024 -- \
             /opt/tf/terraform plan -out=/tmp/ws/out/plan",
        );
    }

    #[test]
    fn lines_are_split_at_newlines_and_at_the_maximum() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"ab\ncd"), vec![b"ab".to_vec()]);
        assert_eq!(s.push(b"e\n\n"), vec![b"cde".to_vec(), Vec::new()]);
        let long = vec![b'x'; MAX_LINE + 10];
        let lines = s.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(s.finish().map(|l| l.len()), Some(10));
    }

    async fn collect(cap: usize, lines: &[&str]) -> (Vec<String>, String) {
        let (tx, mut rx) = mpsc::channel(1024);
        let policy = OutputPolicy {
            cap,
            capture_stdout: false,
        };
        let redactor = Redactor::new(["hunter2"]);
        let mut sink = Sink::new("plan", &policy, &redactor, &tx);
        for line in lines {
            sink.line(Stream::Stderr, line.as_bytes().to_vec()).await;
        }
        let (_, tail) = sink.finish().await;
        drop(tx);
        let mut out = Vec::new();
        while let Some(line) = rx.recv().await {
            out.push(line.text);
        }
        (out, tail)
    }

    #[tokio::test]
    async fn the_cap_keeps_the_head_and_the_tail() {
        let (out, tail) = collect(20, &["aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff"]).await;
        assert_eq!(
            out,
            [
                "aaaa",
                "bbbb",
                "[output over the cap: 10 bytes omitted]",
                "eeee",
                "ffff"
            ]
        );
        assert!(tail.ends_with("eeee\nffff"));
        let (out, _) = collect(1000, &["pw is hunter2"]).await;
        assert_eq!(out, ["pw is (sensitive)"]);
    }
}

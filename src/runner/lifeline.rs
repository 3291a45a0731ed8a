//! The lifeline: `tidemark __lifeline PID -- PROGRAM ARGS...` is the first process of every
//! step when the runner knows Tidemark's own executable. It arms a parent-death signal, checks
//! that its parent is still `PID`, makes itself a child subreaper, starts the step's command
//! line (prlimit, then bubblewrap) as its child, and waits. It exits as its child did (128 +
//! the signal for a child a signal killed), after killing anything left below it. If Tidemark
//! dies, the signal arrives and the lifeline kills everything below it first.
//!
//! Why a process of its own: bubblewrap arms `--die-with-parent` late. Its outer process, run
//! as root, changes its credentials first, which clears a parent-death signal armed before it;
//! and the sandbox's first process arms its own only after it has set up the sandbox and left
//! the step's process group (`--new-session`). A service killed in those windows (10 to 50 ms
//! of every step's start) left the sandbox running, orphaned, with the state proxy and the tool
//! under it: the recovery test caught it, 5 times in 19 runs under load, and a loop of kills at
//! set delays showed the windows. The lifeline never changes its credentials, so its signal
//! stays armed; arming it before checking the parent closes the race with a parent that dies
//! first; and as a subreaper it becomes the parent of whatever bubblewrap's death orphans, so
//! it can kill that too. The signal is tied to the thread that spawned the step, as
//! bubblewrap's own is; the runtime's worker threads live as long as the process.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The hidden subcommand that runs [`run_lifeline`].
pub const LIFELINE_COMMAND: &str = "__lifeline";

/// `argv` behind the lifeline of the current process.
pub fn lifeline_argv(exe: &Path, argv: Vec<OsString>) -> Vec<OsString> {
    let mut wrapped: Vec<OsString> = vec![
        exe.into(),
        LIFELINE_COMMAND.into(),
        std::process::id().to_string().into(),
        "--".into(),
    ];
    wrapped.extend(argv);
    wrapped
}

/// Runs `command` tied to the life of process `parent`; returns its exit code. Single-threaded
/// by design: the signals it waits for are blocked before they can arrive (the child starts
/// with an empty signal mask: the standard library resets it).
pub fn run_lifeline(parent: u32, command: &[OsString]) -> io::Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::other("the lifeline needs a command to run"))?;
    let mut watched = SigSet::empty();
    watched.add(Signal::SIGTERM);
    watched.add(Signal::SIGCHLD);
    watched.thread_block().map_err(io::Error::other)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .map_err(|e| io::Error::other(format!("arming the parent-death signal: {e}")))?;
    let now = std::os::unix::process::parent_id();
    if now != parent {
        return Err(io::Error::other(format!(
            "Tidemark (pid {parent}) is gone before the step started (parent is now {now})"
        )));
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::other)?;
    let mut child = Command::new(program)
        .args(args)
        .spawn()
        .map_err(|e| io::Error::other(format!("starting {}: {e}", program.to_string_lossy())))?;
    loop {
        match watched.wait().map_err(io::Error::other)? {
            Signal::SIGCHLD => {
                if let Some(status) = child.try_wait()? {
                    end_everything_below();
                    return Ok(status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
                }
            }
            // Tidemark is gone (or someone asks us to stop): the step goes with it.
            _ => {
                let _ = child.kill();
                end_everything_below();
                return Err(io::Error::other("Tidemark is gone: the step was killed"));
            }
        }
    }
}

/// Kills and reaps every process below the lifeline until none is left. Orphans are
/// reparented to it (it is a child subreaper), so each round finds what the last one's kills
/// set loose; killing a sandbox's first process ends its whole PID namespace.
fn end_everything_below() {
    let me = std::process::id();
    for _ in 0..500 {
        // Reap what has exited. No child left (ECHILD) ends it: the usual case after a step
        // that ended by itself, which then costs no scan of /proc.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        for pid in children_of(me) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The live children of `parent`, from `/proc/*/stat` (the parent pid is the second field
/// after the command name, which may itself hold spaces and parentheses).
fn children_of(parent: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
            let state = fields.next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            (ppid == parent && state != "Z").then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_found_in_proc() {
        let mut child = Command::new("sleep").arg("5").spawn().expect("sleep");
        let found = children_of(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
    }

    #[test]
    fn the_lifeline_goes_first_and_names_this_process() {
        let argv = lifeline_argv(
            Path::new("/bin/tidemark"),
            vec!["prlimit".into(), "x".into()],
        );
        let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
        let me = std::process::id().to_string();
        assert_eq!(
            argv,
            ["/bin/tidemark", "__lifeline", &me, "--", "prlimit", "x"]
        );
    }

    #[test]
    fn a_parent_that_is_not_ours_refuses_to_start() {
        // In a thread of its own: the lifeline blocks signals in the thread that runs it.
        let err = std::thread::spawn(|| {
            let result = run_lifeline(std::process::id(), &["/bin/true".into()]);
            nix::sys::prctl::set_pdeathsig(None).expect("disarm");
            result
        })
        .join()
        .expect("thread")
        .expect_err("refused");
        assert!(
            err.to_string().contains("is gone before the step started"),
            "{err}"
        );
    }
}

//! The lifeline: `tidemark __lifeline PID -- PROGRAM ARGS...` is the first process of every
//! step when the runner knows Tidemark's own executable. It arms a parent-death signal
//! (SIGKILL), then checks that its parent is still `PID`, then execs the step's command line
//! (prlimit, then bubblewrap) in its own place, so a step never outlives the Tidemark process
//! that started it.
//!
//! Why: bubblewrap's `--die-with-parent` is armed only once bubblewrap itself runs. A service
//! killed between the fork and that moment left bubblewrap orphaned, with the state proxy and
//! the tool running under it (the recovery test caught it). Arming the signal first and then
//! checking the parent closes that window: a parent that died before the signal was armed is
//! seen by the check, one that dies after it fires the signal. The signal survives `exec`
//! (prlimit and bubblewrap are not set-user-ID). It is tied to the thread that spawned the
//! step, as bubblewrap's own is; the runtime's worker threads live as long as the process.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::sys::signal::Signal;

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

/// Arms SIGKILL for the death of the parent, checks the parent is `parent`, and replaces this
/// process with `command`. Returns only on failure.
pub fn run_lifeline(parent: u32, command: &[OsString]) -> io::Error {
    let Some((program, args)) = command.split_first() else {
        return io::Error::other("the lifeline needs a command to run");
    };
    if let Err(err) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return io::Error::other(format!("arming the parent-death signal: {err}"));
    }
    let now = std::os::unix::process::parent_id();
    if now != parent {
        return io::Error::other(format!(
            "Tidemark (pid {parent}) is gone before the step started (parent is now {now})"
        ));
    }
    let err = Command::new(program).args(args).exec();
    io::Error::other(format!("starting {}: {err}", program.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = run_lifeline(std::process::id(), &["/bin/true".into()]);
        nix::sys::prctl::set_pdeathsig(None).expect("disarm");
        assert!(
            err.to_string().contains("is gone before the step started"),
            "{err}"
        );
    }
}

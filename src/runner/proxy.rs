//! The state proxy: `tidemark __state-proxy --socket PATH --path /state/R/S -- PROGRAM ARGS...`
//! runs as the sandboxed step's first process. Under bubblewrap a step has no network, only
//! its own loopback; the proxy listens on a free port of that loopback, forwards every
//! connection to the run's Unix socket (inside the workspace, so visible in the sandbox), and
//! runs the tool as its child with `TF_HTTP_ADDRESS`, `TF_HTTP_LOCK_ADDRESS` and
//! `TF_HTTP_UNLOCK_ADDRESS` pointing at it. The step reaches this one stack's state and
//! nothing else of Tidemark's. Without a sandbox the same code runs on the host's loopback.
//!
//! Plain threads, no runtime: the proxy lives exactly as long as its child, and the step's
//! process group (the proxy, the tool and its providers) is killed as one.

use std::ffi::OsString;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The hidden subcommand that runs [`run_state_proxy`].
pub const PROXY_COMMAND: &str = "__state-proxy";

/// The proxy's arguments in front of the tool's command line.
pub fn proxy_argv(socket: &Path, path: &str, program: &Path, args: &[String]) -> Vec<String> {
    let mut argv = vec![
        PROXY_COMMAND.to_string(),
        "--socket".into(),
        socket.display().to_string(),
        "--path".into(),
        path.to_string(),
        "--".into(),
        program.display().to_string(),
    ];
    argv.extend(args.iter().cloned());
    argv
}

/// Listens on `127.0.0.1:0`, forwards to `socket`, runs `command` with the backend addresses
/// in its environment and returns its exit code (128 + the signal when one killed it).
pub fn run_state_proxy(socket: &Path, path: &str, command: &[OsString]) -> io::Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::other("the state proxy needs a command to run"))?;
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let address = format!("http://{}{path}", listener.local_addr()?);
    let socket = socket.to_path_buf();
    std::thread::spawn(move || accept(listener, socket));
    let status = Command::new(program)
        .args(args)
        .env("TF_HTTP_ADDRESS", &address)
        .env("TF_HTTP_LOCK_ADDRESS", &address)
        .env("TF_HTTP_UNLOCK_ADDRESS", &address)
        .status()
        .map_err(|e| io::Error::other(format!("starting {}: {e}", program.to_string_lossy())))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn accept(listener: TcpListener, socket: PathBuf) {
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let socket = socket.clone();
        std::thread::spawn(move || {
            if let Err(err) = pipe(tcp, &socket) {
                eprintln!("tidemark state proxy: {}: {err}", socket.display());
            }
        });
    }
}

/// Copies both ways until each side has closed its half.
fn pipe(tcp: TcpStream, socket: &Path) -> io::Result<()> {
    let unix = UnixStream::connect(socket)?;
    let (mut from_tcp, mut to_unix) = (tcp.try_clone()?, unix.try_clone()?);
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut from_tcp, &mut to_unix);
        let _ = to_unix.shutdown(Shutdown::Write);
    });
    let (mut from_unix, mut to_tcp) = (unix, tcp);
    let _ = io::copy(&mut from_unix, &mut to_tcp);
    let _ = to_tcp.shutdown(Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_child_reaches_the_socket_through_the_advertised_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("s.sock");
        let server = UnixListener::bind(&socket).expect("bind");
        let echo = std::thread::spawn(move || {
            let (mut conn, _) = server.accept().expect("accept");
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).expect("read");
            conn.write_all(&buf.map(|b| b.to_ascii_uppercase()))
                .expect("write");
        });
        // The child writes the address it was given to a file; the test connects to it. The
        // listener outlives the child here (in the real proxy the process exits with it).
        let out = dir.path().join("address");
        let script = format!("printf %s \"$TF_HTTP_ADDRESS\" > {}", out.display());
        let command: Vec<OsString> = ["sh", "-c", &script].map(OsString::from).to_vec();
        let proxy = {
            let socket = socket.clone();
            std::thread::spawn(move || run_state_proxy(&socket, "/state/r/s", &command))
        };
        let address = loop {
            match std::fs::read_to_string(&out) {
                Ok(text) if text.ends_with("/state/r/s") => break text,
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let host = address
            .trim_start_matches("http://")
            .trim_end_matches("/state/r/s")
            .to_string();
        let mut conn = TcpStream::connect(host).expect("connect");
        conn.write_all(b"hello").expect("send");
        let mut reply = [0u8; 5];
        conn.read_exact(&mut reply).expect("reply");
        assert_eq!(&reply, b"HELLO");
        echo.join().expect("echo");
        assert_eq!(proxy.join().expect("proxy").expect("exit"), 0);
    }
}

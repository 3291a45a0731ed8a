//! `tidemark hash-password`: reads a password from standard input (its first line) and prints
//! its argon2id hash, for a `user` block's `password_hash_env` variable.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input: printf '%s' 'the password' | tidemark hash-password");
    }
    println!("{}", crate::crypto::password::hash(password));
    Ok(ExitCode::SUCCESS)
}

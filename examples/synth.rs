//! Writes a synthetic monorepo (`stacks::synth`) to a directory, for measuring commands on it:
//! `cargo run --example synth -- DIR 10000`, then e.g.
//! `/usr/bin/time -v tidemark plan --repo DIR --rev HEAD --stack stacks/g000/s00000`.

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: synth DIR STACKS")?;
    let stacks: usize = args.next().context("usage: synth DIR STACKS")?.parse()?;
    let repo = tidemark::stacks::synth::generate(std::path::Path::new(&dir), stacks)?;
    println!(
        "{dir}: {stacks} stacks, {} files, {} bytes, commits {}",
        repo.files,
        repo.bytes,
        repo.commits.join(" ")
    );
    Ok(())
}

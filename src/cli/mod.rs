//! The command line: every subcommand, its flags, and the dispatch to the library.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

/// Tidemark: a GitOps runner for Terraform and OpenTofu.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax); RUST_LOG works too.
    #[arg(long, global = true, env = "TIDEMARK_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version of Tidemark and of the tools it finds.
    Version(version::Args),
    /// Plan stacks of a local repository through the sandboxed runner and print summaries.
    Plan(plan::Args),
}

/// How a command prints its data: for people, or as one JSON document for scripts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Sets up tracing on stderr, so that stdout carries only a command's data.
pub fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs one command; the exit code is the command's to choose (0 unless it says otherwise).
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Version(args) => version::run(args),
        Command::Plan(args) => plan::run(args),
    }
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A multi-threaded tokio runtime for the commands that need one.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

mod plan;
mod version;

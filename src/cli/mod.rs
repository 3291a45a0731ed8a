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
    /// Run the service: poll repositories, plan affected stacks, serve the API and dashboard.
    Serve(serve::Args),
    /// List runs, newest first.
    Runs(runs::Args),
    /// Apply the database migrations.
    Migrate(migrate::Args),
    /// Ask the running service to poll a repository now.
    Poll(poll::Args),
    /// List locked stacks: those a run holds, and those an interrupted apply left locked.
    Locks(locks::LocksArgs),
    /// Release the lock an interrupted apply left on a stack.
    Unlock(locks::UnlockArgs),
    /// Freeze every apply (plans and drift checks go on) until `tidemark thaw`.
    Freeze(locks::FreezeArgs),
    /// Lift the apply freeze.
    Thaw(locks::ThawArgs),
    /// Print the version of Tidemark.
    Version(version::Args),
    /// List the stacks at a commit.
    Stacks(stacks::Args),
    /// The stacks a change affects between two commits, and why.
    Affected(affected::Args),
    /// The stack graph at a commit, as dot or JSON.
    Graph(graph::Args),
    /// Plan stacks of a local repository through the sandboxed runner and print summaries.
    Plan(plan::Args),
    /// Policy checks: evaluate policies against a plan offline, run their unit tests.
    Policy(policy::Args),
    /// Approve a plan run's plan; the gate then queues its apply if the policies passed.
    Approve(gate::ApproveArgs),
    /// Override the soft-mandatory policy failures of one plan run's plan.
    Override(gate::OverrideArgs),
    /// Apply a plan run's plan: refused unless the apply gate passes.
    Apply(gate::ApplyArgs),
    /// Show a plan run's policy verdict and the apply gate's last decision about it.
    Verdict(gate::VerdictArgs),
    /// The state versions Tidemark keeps as a stack's state backend (redacted).
    State(state::Args),
    /// Runs inside a step's sandbox: forwards its loopback to the run's state socket.
    #[command(name = "__state-proxy", hide = true)]
    StateProxy(state::ProxyArgs),
    /// Starts every step: ties it to the Tidemark process that started it, then execs it.
    #[command(name = "__lifeline", hide = true)]
    Lifeline(state::LifelineArgs),
    /// Drift: check stacks of a local checkout now, or show the state the service recorded.
    Drift(drift::Args),
    /// The variable sets a stack's runs get, per phase, and the names they set.
    Vars(vars::Args),
    /// Print the argon2id hash of the password on standard input, for a `user` block.
    HashPassword(password::Args),
    /// Delivery metrics (DORA): deployments, lead time, change fail rate, recovery, rework.
    Dora(dora::Args),
    /// List the pull requests the service follows, with their plans per stack.
    Prs(prs::ListArgs),
    /// Show one pull request: its plans per stack and what its merge applied.
    Pr(prs::ShowArgs),
}

/// Where the server config is: `--config FILE`, else `tidemark.hcl` in the working directory
/// when it exists, else the defaults (SQLite under `.tidemark`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The server config file (HCL).
    #[arg(long, short = 'c', env = "TIDEMARK_CONFIG")]
    pub config: Option<std::path::PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> Result<crate::config::Config> {
        let default = std::path::Path::new("tidemark.hcl");
        match &self.config {
            Some(path) => crate::config::Config::load(path),
            None if default.exists() => crate::config::Config::load(default),
            None => {
                let mut config = crate::config::Config::default_in(&std::env::current_dir()?);
                config.apply_env(|name| std::env::var(name).ok())?;
                Ok(config)
            }
        }
    }
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
    crate::install_crypto_provider();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Poll(args) => poll::run(args),
        Command::Locks(args) => locks::locks(args),
        Command::Unlock(args) => locks::unlock(args),
        Command::Freeze(args) => locks::freeze(args),
        Command::Thaw(args) => locks::thaw(args),
        Command::Version(args) => version::run(args),
        Command::Stacks(args) => stacks::run(args),
        Command::Affected(args) => affected::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Approve(args) => gate::approve(args),
        Command::Override(args) => gate::override_(args),
        Command::Apply(args) => gate::apply(args),
        Command::Verdict(args) => gate::verdict(args),
        Command::State(args) => state::run(args),
        Command::StateProxy(args) => state::proxy(args),
        Command::Lifeline(args) => state::lifeline(args),
        Command::Drift(args) => drift::run(args),
        Command::Vars(args) => vars::run(args),
        Command::HashPassword(args) => password::run(args),
        Command::Dora(args) => dora::run(args),
        Command::Prs(args) => prs::list(args),
        Command::Pr(args) => prs::show(args),
    }
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The stack index a command keeps between calls, so a second call on the same repository is
/// warm: in `TIDEMARK_CACHE_DIR` when set (empty keeps none), else in the user's cache directory
/// (`$XDG_CACHE_HOME/tidemark`, `~/.cache/tidemark`), one file per repository. Without any, the
/// index lives for this call only.
pub(crate) fn cached_index(repo: &git2::Repository) -> crate::stacks::Index {
    use sha2::Digest as _;
    let dir = match std::env::var_os("TIDEMARK_CACHE_DIR") {
        Some(dir) if dir.is_empty() => None,
        Some(dir) => Some(std::path::PathBuf::from(dir)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
            .map(|d| d.join("tidemark")),
    };
    let Some(dir) = dir else {
        return crate::stacks::Index::new();
    };
    let repo_path = std::fs::canonicalize(repo.path()).unwrap_or_else(|_| repo.path().into());
    let digest = sha2::Sha256::digest(repo_path.as_os_str().as_encoded_bytes());
    let name = format!("{}.idx", hex::encode(&digest[..8]));
    crate::stacks::Index::persistent(dir.join("index").join(name))
}

/// Saves what a command's index learned; a failure only costs the next call its warmth.
pub(crate) fn keep_index(index: &mut crate::stacks::Index) {
    if let Err(e) = index.save() {
        let path = index.path().map(|p| p.display().to_string());
        tracing::warn!(
            "could not save the stack index {}: {e:#}",
            path.unwrap_or_default()
        );
    }
}

/// The stacks at a commit, from the repository's kept index.
pub(crate) fn discover_cached(
    repo: &git2::Repository,
    commit: git2::Oid,
) -> Result<crate::stacks::Discovery> {
    let mut index = cached_index(repo);
    let found = crate::stacks::discover(repo, commit, Some(&mut index));
    keep_index(&mut index);
    found
}

/// A multi-threaded tokio runtime for the commands that need one.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

mod affected;
mod dora;
mod drift;
mod gate;
mod graph;
mod locks;
mod migrate;
mod password;
mod plan;
mod policy;
mod poll;
mod prs;
mod runs;
mod serve;
mod stacks;
mod state;
mod vars;
mod version;

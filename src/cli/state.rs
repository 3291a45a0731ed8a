//! `tidemark state versions STACK` and `tidemark state show STACK [--version N]`: the state
//! history Tidemark keeps, redacted (serial, lineage, digest, the run that wrote it, resource
//! addresses, outputs with sensitive values masked; never the state file itself). Also the
//! hidden `__state-proxy` command that runs inside a step's sandbox.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{ConfigArg, Format, print_json};
use crate::store::{StateVersion, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// List a stack's state versions, newest first.
    Versions(StackArgs),
    /// Show one state version (the current one unless --version): outputs (redacted) and
    /// resource addresses.
    #[command(disable_version_flag = true)]
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct StackArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The stack's path from the repository root.
    pub stack: String,
    /// The repository, when several have a stack at that path.
    #[arg(long)]
    pub repo: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The serial of the version to show.
    #[arg(long)]
    pub version: Option<i64>,
}

/// `__state-proxy`: forwards the sandbox's loopback to the run's state socket while it runs
/// the tool (see `runner::run_state_proxy`).
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long)]
    pub path: String,
    /// The tool and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct LifelineArgs {
    /// The Tidemark process the step must not outlive.
    pub parent: u32,
    /// The step's command line.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        StateCommand::Versions(args) => versions(args),
        StateCommand::Show(args) => show(args),
    }
}

pub fn proxy(args: ProxyArgs) -> Result<ExitCode> {
    let code = crate::runner::run_state_proxy(&args.socket, &args.path, &args.command)
        .context("state proxy")?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Exits as the step did.
pub fn lifeline(args: LifelineArgs) -> Result<ExitCode> {
    let code = crate::runner::run_lifeline(args.parent, &args.command).context("lifeline")?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// The repository holding `stack`: `--repo`, else the one tracked repository with a state or
/// a stack at that path.
async fn resolve_repo(store: &Store, args: &StackArgs) -> Result<String> {
    if let Some(repo) = &args.repo {
        return Ok(repo.clone());
    }
    let mut found = Vec::new();
    for repo in store.repos().await? {
        if !store
            .state_versions(&repo.name, &args.stack)
            .await?
            .is_empty()
        {
            found.push(repo.name);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no state is stored for stack {}", args.stack),
        many => bail!(
            "stack {} has state in several repositories ({}): pass --repo",
            args.stack,
            many.join(", ")
        ),
    }
}

fn versions(args: StackArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let (repo, versions) = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        let repo = resolve_repo(&store, &args).await?;
        let versions = store.state_versions(&repo, &args.stack).await?;
        anyhow::Ok((repo, versions))
    })?;
    match args.format {
        Format::Json => print_json(&serde_json::json!({
            "repo": repo, "stack": args.stack, "versions": versions,
        }))?,
        Format::Text => {
            println!(
                "{:>6}  {:<36}  {:>9}  {:>6}  {:<12}  created",
                "serial", "lineage", "resources", "run", "digest"
            );
            for v in &versions {
                let run = v.run_id.map(|id| id.to_string()).unwrap_or("-".into());
                let retired = if v.discarded_at.is_some() {
                    "  (retired)"
                } else {
                    ""
                };
                println!(
                    "{:>6}  {:<36}  {:>9}  {:>6}  {:<12}  {}{retired}",
                    v.serial,
                    v.lineage,
                    v.resource_count,
                    run,
                    &v.digest[..v.digest.len().min(12)],
                    v.created_at.format("%Y-%m-%d %H:%M:%S"),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(args: ShowArgs) -> Result<ExitCode> {
    let config = args.stack.config.load()?;
    let stack = &args.stack;
    let (repo, version) = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        let repo = resolve_repo(&store, stack).await?;
        let version = match args.version {
            Some(serial) => store.state_version(&repo, &stack.stack, serial).await?,
            None => store.latest_state(&repo, &stack.stack).await?,
        };
        anyhow::Ok((repo, version))
    })?;
    let Some(version) = version else {
        match args.version {
            Some(serial) => bail!("stack {} has no state version {serial}", stack.stack),
            None => bail!("stack {} has no current state", stack.stack),
        }
    };
    match stack.format {
        Format::Json => print_json(&serde_json::json!({
            "repo": repo, "stack": stack.stack, "version": version,
        }))?,
        Format::Text => print_version(&repo, &stack.stack, &version),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_version(repo: &str, stack: &str, v: &StateVersion) {
    println!("{repo} {stack}: serial {}, lineage {}", v.serial, v.lineage);
    println!("digest   {}", v.digest);
    match v.run_id {
        Some(run) => println!("written  by run {run} at {}", v.created_at),
        None => println!("written  at {}", v.created_at),
    }
    if let Some(at) = v.discarded_at {
        println!("retired  at {at} (a DELETE of the state)");
    }
    println!("\nresources ({}):", v.resource_count);
    for address in &v.resources {
        println!("  {address}");
    }
    let outputs = v.outputs.as_object().cloned().unwrap_or_default();
    println!("\noutputs ({}):", outputs.len());
    for (name, output) in outputs {
        // Values are already redacted in the store: sensitive ones are the REDACTED marker.
        let value = output.get("value").cloned().unwrap_or_default();
        println!("  {name} = {value}");
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::super::{Cli, Command};
    use super::StateCommand;

    #[test]
    fn the_state_commands_parse() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["tidemark", "state", "show", "stacks/a", "--version", "3"])
            .expect("parse");
        let Command::State(args) = cli.command else {
            panic!("not the state command")
        };
        let StateCommand::Show(show) = args.command else {
            panic!("not state show")
        };
        assert_eq!(
            (show.stack.stack.as_str(), show.version),
            ("stacks/a", Some(3))
        );
        let cli = Cli::try_parse_from([
            "tidemark",
            "__state-proxy",
            "--socket",
            "/ws/s.sock",
            "--path",
            "/state/r/s",
            "--",
            "terraform",
            "plan",
            "-out=x",
        ])
        .expect("parse proxy");
        let Command::StateProxy(proxy) = cli.command else {
            panic!("not the proxy")
        };
        assert_eq!(proxy.command, ["terraform", "plan", "-out=x"]);
    }
}

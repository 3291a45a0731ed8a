//! `tidemark locks` and `tidemark unlock STACK`: which stacks are held, and releasing the
//! explicit lock an interrupted apply leaves.

use std::process::ExitCode;

use anyhow::Result;

use super::{ConfigArg, Format, print_json};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct LocksArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
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

pub fn locks(args: LocksArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let locks =
        super::runtime()?.block_on(async { Store::open(&config.database).await?.locks().await })?;
    match args.format {
        Format::Json => print_json(&serde_json::json!({ "locks": locks }))?,
        Format::Text if locks.is_empty() => println!("no stack is locked"),
        Format::Text => {
            for lock in locks {
                let run = lock
                    .run_id
                    .map(|id| format!("run {id}"))
                    .unwrap_or_default();
                println!(
                    "{}  {}  {}  {}  since {}",
                    lock.repo,
                    lock.stack,
                    run,
                    lock.reason,
                    lock.since.format("%Y-%m-%d %H:%M:%S")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn unlock(args: UnlockArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let removed = super::runtime()?.block_on(async {
        Store::open(&config.database)
            .await?
            .unlock(args.repo.as_deref(), &args.stack)
            .await
    })?;
    match args.format {
        Format::Json => {
            print_json(&serde_json::json!({ "stack": args.stack, "unlocked": removed > 0 }))?
        }
        Format::Text if removed > 0 => println!("unlocked {}", args.stack),
        Format::Text => println!(
            "{} had no explicit lock (a running run releases its stack when it ends)",
            args.stack
        ),
    }
    Ok(if removed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

//! `tidemark locks` and `tidemark unlock STACK`: which stacks are held, and releasing the
//! explicit lock an interrupted apply leaves; `tidemark freeze` and `tidemark thaw`: the global
//! apply freeze.

use std::process::ExitCode;

use anyhow::Result;

use super::gate::ActorArg;
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

#[derive(Debug, clap::Args)]
pub struct FreezeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Why applies are frozen (shown on the dashboard and beside every waiting apply).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub actor: ActorArg,
}

#[derive(Debug, clap::Args)]
pub struct ThawArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub actor: ActorArg,
}

pub fn locks(args: LocksArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let (locks, freeze) = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        anyhow::Ok((store.locks().await?, store.frozen().await?))
    })?;
    match args.format {
        Format::Json => print_json(&serde_json::json!({ "locks": locks, "freeze": freeze }))?,
        Format::Text if locks.is_empty() && freeze.is_none() => println!("no stack is locked"),
        Format::Text => {
            if let Some(f) = &freeze {
                println!(
                    "applies are frozen: {} (by {} since {})",
                    f.reason,
                    f.actor,
                    f.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
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

/// `tidemark freeze --reason R`: no apply starts until `tidemark thaw`; queued applies wait.
pub fn freeze(args: FreezeArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let reason = args.reason.trim();
    anyhow::ensure!(!reason.is_empty(), "a freeze needs a --reason");
    let actor = args.actor.name();
    let frozen = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        let frozen = store.freeze(reason, &actor).await?;
        let outcome = if frozen { "ok" } else { "409 frozen already" };
        store
            .record_audit(&actor, "freeze applies (cli)", outcome, "cli")
            .await?;
        anyhow::Ok(frozen)
    })?;
    if frozen {
        println!("applies are frozen: {reason}");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("applies were frozen already (the first freeze and its reason stay)");
        Ok(ExitCode::from(1))
    }
}

/// `tidemark thaw`: lifts the apply freeze; waiting applies start (each through the gate again).
pub fn thaw(args: ThawArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let actor = args.actor.name();
    let thawed = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        let thawed = store.thaw().await?;
        let outcome = if thawed { "ok" } else { "404 not frozen" };
        store
            .record_audit(&actor, "thaw applies (cli)", outcome, "cli")
            .await?;
        anyhow::Ok(thawed)
    })?;
    println!(
        "{}",
        if thawed {
            "applies are thawed"
        } else {
            "applies were not frozen"
        }
    );
    Ok(ExitCode::SUCCESS)
}

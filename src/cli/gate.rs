//! `tidemark approve RUN`, `tidemark override RUN --reason TEXT`, `tidemark apply RUN` and
//! `tidemark verdict RUN`: the apply gate from the command line. They work on the database
//! directly; the service's workers pick up the apply they queue.

use std::process::ExitCode;

use anyhow::Result;

use super::{ConfigArg, Format, print_json};
use crate::engine::Requested;
use crate::engine::apply;
use crate::gate::Action;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The plan run (or drift check) whose plan to approve.
    pub run: i64,
    /// Why, for the record.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub actor: ActorArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct OverrideArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The plan run whose soft-mandatory policy failures to override.
    pub run: i64,
    /// Why the failures are acceptable for this plan (required).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub actor: ActorArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The plan run whose plan to apply; refused unless the gate passes.
    pub run: i64,
    #[command(flatten)]
    pub actor: ActorArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct VerdictArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The plan run.
    pub run: i64,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Who acts: `--actor`, else `TIDEMARK_ACTOR`, else the login name and host.
#[derive(Debug, Clone, clap::Args)]
pub struct ActorArg {
    /// Who approves, overrides or applies (recorded with the decision).
    #[arg(long, env = "TIDEMARK_ACTOR")]
    pub actor: Option<String>,
}

impl ActorArg {
    pub(super) fn name(&self) -> String {
        self.actor.clone().unwrap_or_else(|| {
            let user = std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into());
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            if host.is_empty() {
                user
            } else {
                format!("{user}@{host}")
            }
        })
    }
}

pub fn approve(args: ApproveArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let actor = args.actor.name();
    let requested = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        apply::approve(&store, args.run, &actor, args.reason.as_deref()).await
    })?;
    report(
        &requested,
        args.format,
        &format!("approved plan run {}", args.run),
        true,
    )
}

pub fn override_(args: OverrideArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let actor = args.actor.name();
    let requested = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        apply::override_verdict(&store, args.run, &actor, &args.reason).await
    })?;
    report(
        &requested,
        args.format,
        &format!("override recorded for plan run {}", args.run),
        false,
    )
}

pub fn apply(args: ApplyArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let actor = args.actor.name();
    let requested = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        apply::apply(&store, args.run, &actor).await
    })?;
    report(
        &requested,
        args.format,
        &format!("plan run {}", args.run),
        true,
    )
}

pub fn verdict(args: VerdictArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let (run, verdict) = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        let run = store.run(args.run).await?;
        let verdict = store.verdict(args.run).await?;
        anyhow::Ok((run, verdict))
    })?;
    let gate: Option<serde_json::Value> = run
        .gate_json
        .as_deref()
        .and_then(|g| serde_json::from_str(g).ok());
    match args.format {
        Format::Json => print_json(&serde_json::json!({
            "run": run.id,
            "plan_digest": verdict.as_ref().map(|(d, _)| d),
            "verdict": verdict.as_ref().map(|(_, v)| v),
            "gate": gate,
        }))?,
        Format::Text => match &verdict {
            None => println!("run {} has no policy verdict", run.id),
            Some((digest, verdict)) => {
                use crate::policy::Blocking;
                let state = match verdict.blocking {
                    Blocking::None => "passed",
                    Blocking::Soft => {
                        "blocked by soft-mandatory policy (an override of this plan lets it through)"
                    }
                    Blocking::Hard => "blocked by hard-mandatory policy or a policy error",
                };
                println!("run {}: {state}; plan {digest}", run.id);
                for result in &verdict.results {
                    println!(
                        "  [{}] {} {}/{}: {}",
                        result.level, result.rule, result.set, result.policy, result.message
                    );
                }
                for error in &verdict.errors {
                    println!("  [error] {error}");
                }
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what the gate decided. The exit code is 1 when `need_apply` and no apply was queued.
fn report(requested: &Requested, format: Format, what: &str, need_apply: bool) -> Result<ExitCode> {
    let decision = &requested.decision;
    match format {
        Format::Json => print_json(requested)?,
        Format::Text => {
            match (decision.action, requested.apply_run, requested.replan_run) {
                (Action::Apply, Some(apply), _) => {
                    println!("{what}: apply run {apply} queued")
                }
                (Action::Replan, _, replan) => println!(
                    "{what}: refused, the plan is stale ({}){}",
                    decision.reasons(),
                    replan
                        .map(|r| format!("; re-plan run {r} queued"))
                        .unwrap_or_default()
                ),
                _ => println!("{what}: not applied: {}", decision.reasons()),
            }
            for check in &decision.checks {
                let mark = if check.passed { "ok  " } else { "FAIL" };
                println!("  {mark} {}: {}", check.name, check.detail);
            }
        }
    }
    Ok(if requested.apply_run.is_some() || !need_apply {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

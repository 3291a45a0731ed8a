//! `tidemark drift`: `check` plans stacks of a local git checkout one-shot (no service, no
//! database) and says which drifted; `status` prints each stack's drift state from the
//! database the service records it in.
//!
//! `drift check` exits 0 when every stack is in sync, 2 when any drifted, 1 when any could not
//! be checked (an error wins over drift).

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::plan::{LocalRunArgs, repo_name};
use super::{ConfigArg, Format, print_json, runtime};
use crate::crypto::PlanKey;
use crate::drift::{CheckResult, Drift, DriftCause, DriftState, DriftedResource, assess};
use crate::runner::{self, LogLine, PlanRequest, RunStatus, Workspace};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Plan stacks of a git checkout's HEAD now and report drift; exit 0 in sync, 2 drifted,
    /// 1 error.
    Check(CheckArgs),
    /// Each stack's drift state as the service last recorded it.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The repository, the stacks and the runner; its HEAD commit is checked.
    #[command(flatten)]
    pub local: LocalRunArgs,
    /// Stacks planned at once (default: the number of cores). The report keeps discovery
    /// order whatever order the plans end in.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// One stack's line in `drift check`.
#[derive(Debug, Serialize)]
struct StackDrift {
    stack: String,
    state: DriftState,
    fingerprint: Option<String>,
    resources: Vec<DriftedResource>,
    outputs: Vec<String>,
    /// `changed_outside_git` when refreshing showed changes made outside terraform; without
    /// the service's apply history "code not yet applied" cannot be told apart, so otherwise
    /// null.
    cause: Option<DriftCause>,
    error: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Check(args) => check(args),
        Command::Status(args) => status(args),
    }
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let def = args.local.runner_def()?;
    let sandbox = args.local.sandbox.mode();
    let root = tempfile::tempdir()?;
    let repo = crate::repo::open(&args.local.repo)?;
    let commit = crate::repo::resolve_commit(&repo, "HEAD")?;
    let mut index = super::cached_index(&repo);
    let stacks = args.local.stacks_at(&repo, commit, &mut index)?;
    let repo_name = repo_name(&args.local.repo);
    let key = PlanKey::generate();
    let rt = runtime()?;
    let cancel = CancellationToken::new();
    let parallel = args.parallel.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    // Every stack's workspace is exported first, with one analysis of the commit; then the
    // plans run, `parallel` at a time.
    let mut jobs = Vec::new();
    for stack in stacks {
        let (workspace, instance) =
            Workspace::export_instance(root.path(), &repo, commit, &stack, Some(&mut index))?;
        let dir = instance
            .as_ref()
            .map_or(stack.clone(), |s| s.dir().to_string());
        // A stack that keeps its state in Tidemark's backend has none here: planned against an
        // empty state, everything would look drifted. The service checks those.
        if runner::stack_backend(&workspace.tree().join(&dir)) == runner::StackBackend::None {
            let why = format!(
                "stack {stack} declares no backend: its state lives in Tidemark's state backend, so only the service (`tidemark drift status`) can check it"
            );
            jobs.push(Job::Done(report(stack, Err(why))));
            continue;
        }
        let req = PlanRequest {
            instance: instance
                .as_ref()
                .map(runner::Instance::of)
                .unwrap_or_default(),
            provider_cache: None,
            lifeline: std::env::current_exe().ok(),
            workspace,
            stack: dir,
            runner: def.clone(),
            sandbox,
            variables: Vec::new(),
            secrets: Vec::new(),
            files: Vec::new(),
            repo: repo_name.clone(),
            commit: commit.to_string(),
            key: key.clone(),
            state: None,
        };
        jobs.push(Job::Plan(stack, Box::new(req)));
    }
    super::keep_index(&mut index);
    let reports = rt.block_on(check_all(jobs, parallel, cancel))?;
    let code = if reports.iter().any(|r| r.state == DriftState::Error) {
        1
    } else if reports.iter().any(|r| r.state == DriftState::Drifted) {
        2
    } else {
        0
    };
    match args.format {
        Format::Json => {
            print_json(&serde_json::json!({ "commit": commit.to_string(), "stacks": reports }))?
        }
        Format::Text => print_check(&reports),
    }
    Ok(ExitCode::from(code))
}

/// A stack's check: its report already (it cannot be checked here), or its plan to run.
enum Job {
    Done(StackDrift),
    Plan(String, Box<PlanRequest>),
}

/// Runs the jobs' plans, `parallel` at a time, and returns their reports in the jobs' order.
async fn check_all(
    jobs: Vec<Job>,
    parallel: usize,
    cancel: CancellationToken,
) -> Result<Vec<StackDrift>> {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut running = tokio::task::JoinSet::new();
    let mut reports: Vec<Option<StackDrift>> = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.into_iter().enumerate() {
        match job {
            Job::Done(report) => reports.push(Some(report)),
            Job::Plan(stack, req) => {
                reports.push(None);
                let (gate, cancel) = (gate.clone(), cancel.clone());
                running.spawn(async move {
                    let _turn = gate.acquire_owned().await;
                    // The log is not printed: stdout carries the report, stderr the warnings.
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<LogLine>(256);
                    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
                    let outcome = runner::plan(*req, tx, cancel).await;
                    let _ = drain.await;
                    let plan = match (&outcome.status, &outcome.artifact) {
                        (RunStatus::Succeeded, Some(artifact)) => artifact
                            .plan_json()
                            .map_err(|e| e.to_string())
                            .and_then(|json| {
                                serde_json::from_slice::<Value>(&json).map_err(|e| e.to_string())
                            }),
                        _ => Err(outcome
                            .error
                            .clone()
                            .unwrap_or_else(|| format!("plan {:?}", outcome.status))),
                    };
                    (i, report(stack, plan))
                });
            }
        }
    }
    while let Some(done) = running.join_next().await {
        let (i, report) = done?;
        reports[i] = Some(report);
    }
    Ok(reports.into_iter().flatten().collect())
}

/// A stack's report from its plan JSON (or why there is none).
fn report(stack: String, plan: Result<Value, String>) -> StackDrift {
    let result = match &plan {
        // Whether the head was applied is unknown here; the drift itself does not depend on it.
        Ok(plan) => assess(plan, None, true),
        Err(message) => CheckResult::Error {
            message: message.clone(),
        },
    };
    let empty = |state, error| StackDrift {
        stack: stack.clone(),
        state,
        fingerprint: None,
        resources: Vec::new(),
        outputs: Vec::new(),
        cause: None,
        error,
    };
    match result {
        CheckResult::InSync => empty(DriftState::InSync, None),
        CheckResult::Error { message } => empty(DriftState::Error, Some(message)),
        CheckResult::Drifted {
            drift, fingerprint, ..
        } => {
            let outside = plan.as_ref().map(Drift::from_resource_drift).ok();
            let Drift { resources, outputs } = drift;
            StackDrift {
                stack,
                state: DriftState::Drifted,
                fingerprint: Some(fingerprint),
                resources,
                outputs,
                cause: outside
                    .filter(|o| !o.is_empty())
                    .map(|_| DriftCause::ChangedOutsideGit),
                error: None,
            }
        }
    }
}

fn print_check(reports: &[StackDrift]) {
    for r in reports {
        let fingerprint = r.fingerprint.as_deref().map(|f| &f[..f.len().min(12)]);
        match fingerprint {
            Some(f) => println!("{}: {} ({f})", r.stack, r.state.as_str()),
            None => println!("{}: {}", r.stack, r.state.as_str()),
        }
        if let Some(cause) = r.cause {
            println!("  cause: {}", cause.describe());
        }
        for res in &r.resources {
            println!("  {} ({})", res.address, res.actions.join(", "));
        }
        for output in &r.outputs {
            println!("  output {output}");
        }
        if let Some(error) = &r.error {
            for line in error.lines() {
                println!("  ! {line}");
            }
        }
    }
}

fn status(args: StatusArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let statuses = runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        let statuses = store.drift_statuses().await;
        store.close().await;
        statuses
    })?;
    match args.format {
        Format::Json => print_json(&serde_json::json!({ "stacks": statuses }))?,
        Format::Text => {
            println!(
                "{:<12} {:<28} {:<8} {:<17} {:<12} resources",
                "repo", "stack", "state", "since", "fingerprint"
            );
            for s in statuses {
                let fingerprint = s.fingerprint.as_deref().unwrap_or("-");
                println!(
                    "{:<12} {:<28} {:<8} {:<17} {:<12} {}",
                    s.repo,
                    s.stack,
                    s.state,
                    s.since.format("%Y-%m-%d %H:%M"),
                    &fingerprint[..fingerprint.len().min(12)],
                    s.resources.len()
                );
                if let Some(error) = s.error.filter(|_| s.state == "error") {
                    println!("  ! {}", error.lines().next().unwrap_or(""));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

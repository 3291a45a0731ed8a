//! A worker: claims one run at a time from the store's queue, executes it through the runner
//! in a fresh workspace, streams its log into the store, and records the outcome.
//!
//! While a run executes, a heartbeat renews its lease. If the heartbeat finds the run is no
//! longer ours (the lease expired and another instance recovered it), the run is cancelled:
//! two workers must never both act on one run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::runner::{self, LogLine, PlanKey, PlanRequest, RunnerSet, SandboxMode, Workspace};
use crate::store::{Run, RunKind, RunOutcome, RunStatus, Store, StoredArtifact};

/// What a worker needs to execute runs; shared by every worker of one instance.
pub struct WorkerContext {
    pub store: Store,
    pub runners: RunnerSet,
    pub sandbox: SandboxMode,
    /// Encrypts binary plans at rest.
    pub key: PlanKey,
    /// Where run workspaces are created (and swept of leftovers at start).
    pub workspaces: PathBuf,
    /// Where each repository's bare mirror lives, by repo name.
    pub mirrors: HashMap<String, PathBuf>,
    /// How long a claimed run is ours without a heartbeat.
    pub lease: Duration,
    /// Woken when runs are queued.
    pub work: Arc<Notify>,
    /// How long running steps may go on after shutdown begins.
    pub grace: Duration,
    /// Assesses finished drift runs; `None` leaves them unassessed (benchmarks).
    pub drift: Option<super::DriftHook>,
}

/// One worker slot.
pub struct Worker {
    pub name: String,
    pub ctx: Arc<WorkerContext>,
}

impl Worker {
    /// Claims and executes runs until shutdown. On shutdown it claims nothing more; a run in
    /// progress gets `grace` to finish, then its process is stopped and the run released
    /// (a plan back to the queue, an apply marked interrupted).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let worked = match self.step(&shutdown).await {
                Ok(worked) => worked,
                Err(err) => {
                    error!(worker = %self.name, error = %format!("{err:#}"), "worker step failed");
                    false
                }
            };
            if !worked {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.ctx.work.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// Claims one run and executes it. Returns false when there was nothing to claim.
    pub async fn step(&self, shutdown: &CancellationToken) -> Result<bool> {
        let Some(run) = self.ctx.store.claim(&self.name, self.ctx.lease).await? else {
            return Ok(false);
        };
        let span = info_span!("run", run = run.id, repo = %run.repo, stack = %run.stack, commit = %run.commit, kind = %run.kind);
        self.execute(run, shutdown).instrument(span).await?;
        Ok(true)
    }

    async fn execute(&self, run: Run, shutdown: &CancellationToken) -> Result<()> {
        let ctx = &self.ctx;
        info!("run started");
        let cancel = CancellationToken::new();
        let (log_tx, log_rx) = mpsc::channel::<LogLine>(256);
        let logs = tokio::spawn(drain_logs(ctx.store.clone(), run.id, log_rx));
        let heartbeat = tokio::spawn(heartbeat(
            ctx.clone(),
            run.id,
            self.name.clone(),
            cancel.clone(),
        ));
        // Shutdown lets the step run for the grace period, then cancels it.
        let grace = {
            let (shutdown, cancel, grace) = (shutdown.clone(), cancel.clone(), ctx.grace);
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                cancel.cancel();
            })
        };
        let outcome = match run.kind {
            RunKind::Plan | RunKind::Drift => self.plan(&run, log_tx, cancel.clone()).await,
            RunKind::Apply => self.apply(&run, log_tx, cancel.clone()).await,
        };
        grace.abort();
        heartbeat.abort();
        let _ = logs.await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => RunOutcome {
                status: RunStatus::Failed,
                exit_code: None,
                error: Some(format!("{err:#}")),
                summary: None,
            },
        };
        if outcome.status == RunStatus::Cancelled && shutdown.is_cancelled() {
            let released = ctx.store.release(run.id, &self.name).await?;
            warn!(?released, "run stopped by shutdown");
            return Ok(());
        }
        if !ctx.store.finish(run.id, &self.name, &outcome).await? {
            warn!("run was taken from this worker before it finished; outcome not recorded");
            return Ok(());
        }
        if let (RunKind::Drift, Some(drift)) = (run.kind, &ctx.drift)
            && let Err(err) = drift.after_check(&ctx.store, &run, &outcome).await
        {
            error!(error = %format!("{err:#}"), "recording the drift check failed");
        }
        match outcome.status {
            RunStatus::Succeeded => info!("run succeeded"),
            status => {
                warn!(%status, error = outcome.error.as_deref().unwrap_or(""), "run did not succeed")
            }
        }
        Ok(())
    }

    /// Exports the run's commit into a fresh workspace and builds the runner request for it.
    async fn request(&self, run: &Run) -> Result<PlanRequest> {
        let ctx = &self.ctx;
        let mirror = ctx
            .mirrors
            .get(&run.repo)
            .with_context(|| format!("repo {} is not in this instance's config", run.repo))?;
        let runner_name = ctx.store.stack_runner(&run.repo, &run.stack).await?;
        let runner_name = runner_name.as_deref().unwrap_or("terraform");
        let runner = ctx
            .runners
            .get(runner_name)
            .with_context(|| format!("stack {}", run.stack))?
            .clone();
        let (mirror, root, commit) = (mirror.clone(), ctx.workspaces.clone(), run.commit.clone());
        let workspace = tokio::task::spawn_blocking(move || -> Result<Workspace> {
            let repo = crate::repo::open(&mirror)?;
            let oid = git2::Oid::from_str(&commit).with_context(|| format!("commit {commit}"))?;
            Workspace::export(&root, &repo, oid)
        })
        .await
        .context("workspace export panicked")??;
        Ok(PlanRequest {
            workspace,
            stack: run.stack.clone(),
            runner,
            sandbox: ctx.sandbox,
            variables: Vec::new(),
            secrets: Vec::new(),
            repo: run.repo.clone(),
            commit: run.commit.clone(),
            key: ctx.key.clone(),
        })
    }

    /// Plans the stack and stores the plan artifact.
    async fn plan(
        &self,
        run: &Run,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> Result<RunOutcome> {
        let ctx = &self.ctx;
        let request = self.request(run).await?;
        let outcome = runner::plan(request, logs, cancel).await;
        if let Some(artifact) = &outcome.artifact {
            ctx.store
                .save_artifact(&StoredArtifact {
                    run_id: run.id,
                    digest: artifact.digest.clone(),
                    binding: serde_json::to_string(&artifact.binding)?,
                    plan_encrypted: artifact.plan_encrypted.clone(),
                    plan_json: artifact.plan_json.clone(),
                    created_at: chrono::Utc::now(),
                })
                .await
                .context("storing the plan artifact")?;
        }
        Ok(RunOutcome {
            status: status(outcome.status),
            exit_code: outcome.exit_code,
            error: outcome.error,
            summary: outcome
                .summary
                .as_ref()
                .map(serde_json::to_value)
                .transpose()?,
        })
    }

    /// Applies exactly the stored plan of the run's plan run. The runner refuses an artifact
    /// whose binding (commit, stack, runner, tool version, lock file, variables) has changed.
    async fn apply(
        &self,
        run: &Run,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> Result<RunOutcome> {
        let plan_run = run
            .plan_run_id
            .with_context(|| format!("apply run {} names no plan run", run.id))?;
        let stored = self
            .ctx
            .store
            .artifact(plan_run)
            .await?
            .with_context(|| format!("plan run {plan_run} has no stored plan"))?;
        let artifact = runner::PlanArtifact {
            plan_encrypted: stored.plan_encrypted,
            plan_json: stored.plan_json,
            digest: stored.digest,
            binding: serde_json::from_str(&stored.binding)
                .context("reading the stored plan's binding")?,
        };
        let request = self.request(run).await?;
        let outcome = runner::apply(
            runner::ApplyRequest {
                run: request,
                artifact,
            },
            logs,
            cancel,
        )
        .await;
        Ok(RunOutcome {
            status: status(outcome.status),
            exit_code: outcome.exit_code,
            error: outcome.error,
            summary: None,
        })
    }
}

fn status(status: runner::RunStatus) -> RunStatus {
    match status {
        runner::RunStatus::Succeeded => RunStatus::Succeeded,
        runner::RunStatus::Failed => RunStatus::Failed,
        runner::RunStatus::TimedOut => RunStatus::TimedOut,
        runner::RunStatus::Cancelled => RunStatus::Cancelled,
    }
}

/// Writes log lines into the store in small batches as they arrive.
async fn drain_logs(store: Store, run_id: i64, mut rx: mpsc::Receiver<LogLine>) {
    let mut batch = Vec::new();
    while let Some(line) = rx.recv().await {
        batch.push(log_row(line));
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(line) => batch.push(log_row(line)),
                Err(_) => break,
            }
        }
        if let Err(err) = store.append_logs(run_id, &batch).await {
            warn!(run = run_id, error = %err, "storing log lines failed");
        }
        batch.clear();
    }
}

fn log_row(line: LogLine) -> (String, String, String) {
    let stream = match line.stream {
        runner::Stream::Stdout => "stdout",
        runner::Stream::Stderr => "stderr",
        runner::Stream::System => "system",
    };
    (line.step, stream.to_string(), line.text)
}

/// Renews the lease every third of its length; cancels the run if it is no longer ours.
async fn heartbeat(
    ctx: Arc<WorkerContext>,
    run_id: i64,
    worker: String,
    cancel: CancellationToken,
) {
    let every = ctx.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match ctx.store.heartbeat(run_id, &worker, ctx.lease).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(run = run_id, "lease lost: stopping the run");
                cancel.cancel();
                return;
            }
            Err(err) => warn!(run = run_id, error = %err, "heartbeat failed; retrying"),
        }
    }
}

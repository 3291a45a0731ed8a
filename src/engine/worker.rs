//! A worker: claims one run at a time from the store's queue, executes it through the runner
//! in a fresh workspace, streams its log into the store, and records the outcome. What follows
//! a run (verdicts, applies, re-plans, drift records) is decided in `followup.rs`.
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

use super::apply::{self, Policies};
use super::followup::{Applied, Executed, FollowUps};
use crate::crypto::PlanKey;
use crate::runner::{self, LogLine, PlanRequest, RunnerSet, SandboxMode, Workspace};
use crate::store::{Run, RunKind, RunOutcome, RunStatus, Store, StoredArtifact};
use crate::variables::{self, Phase, Resolved, Target, VariableSet};

/// What a worker needs to execute runs; shared by every worker of one instance.
pub struct WorkerContext {
    pub store: Store,
    /// The Tidemark executable: its hidden `__state-proxy` command runs in each step's sandbox.
    pub exe: PathBuf,
    pub runners: RunnerSet,
    pub sandbox: SandboxMode,
    /// Encrypts binary plans at rest.
    pub key: PlanKey,
    /// Where run workspaces are created (and swept of leftovers at start).
    pub workspaces: PathBuf,
    /// Where each repository's bare mirror lives, by repo name.
    pub mirrors: HashMap<String, PathBuf>,
    /// Each repository's poll nudge, by repo name: a run whose commit this instance has not
    /// fetched yet wakes its poller (see `fetched`).
    pub nudges: HashMap<String, Arc<Notify>>,
    /// How long a claimed run is ours without a heartbeat.
    pub lease: Duration,
    /// Woken when runs are queued.
    pub work: Arc<Notify>,
    /// How long running steps may go on after shutdown begins.
    pub grace: Duration,
    /// The policies that judge each repository's plans, by repo name.
    pub policies: Policies,
    /// Assesses finished drift runs; `None` leaves them unassessed (benchmarks).
    pub drift: Option<super::DriftHook>,
    /// The variable sets of the server config, in the order they apply.
    pub variables: Vec<VariableSet>,
    /// Per repository, the warm stack index its poller keeps: a run's export reads its
    /// stack's closure from it instead of analysing the whole commit again. A repository
    /// without one (tests, benchmarks) is analysed cold.
    pub indexes: HashMap<String, Arc<tokio::sync::Mutex<crate::stacks::Index>>>,
    /// Per repository with a forge: where a pull request's finished runs are announced.
    pub pr_refresh: HashMap<String, super::PrRefresh>,
    /// The shared provider cache (`DATA_DIR/provider-cache`); `None` downloads on every init.
    pub provider_cache: Option<PathBuf>,
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
        self.follow_ups().started(&run);
        let kind = run.kind.as_str();
        let waited = (chrono::Utc::now() - run.created_at).num_milliseconds() as f64 / 1000.0;
        crate::telemetry::run_started(kind, waited);
        let started = std::time::Instant::now();
        let executed = self.execute(run, shutdown).instrument(span).await;
        let status = match &executed {
            Ok(Some(status)) => status.as_str(),
            Ok(None) => "released",
            Err(_) => "error",
        };
        crate::telemetry::run_finished(kind, status, started.elapsed().as_secs_f64());
        executed?;
        Ok(true)
    }

    /// Executes a claimed run; returns the status it recorded (`None`: released at shutdown, or
    /// taken by another worker).
    async fn execute(&self, run: Run, shutdown: &CancellationToken) -> Result<Option<RunStatus>> {
        let ctx = &self.ctx;
        if run.kind == RunKind::Plan && run.transitive {
            let upstream = ctx.store.upstream_runs(run.id).await?;
            if let Some(why) = apply::skip_transitive(&run, &upstream) {
                info!("{why}");
                let outcome = RunOutcome {
                    status: RunStatus::Superseded,
                    exit_code: None,
                    error: Some(why),
                    summary: None,
                };
                ctx.store.finish(run.id, &self.name, &outcome).await?;
                return Ok(Some(outcome.status));
            }
        }
        info!("run started");
        let cancel = CancellationToken::new();
        let (log_tx, log_rx) = mpsc::channel::<LogLine>(256);
        let logs = tokio::spawn(super::logs::drain(ctx.store.clone(), run.id, log_rx));
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
        let executed = match run.kind {
            RunKind::Plan | RunKind::Drift => self.plan(&run, log_tx, cancel.clone()).await,
            RunKind::Apply => self.apply(&run, log_tx, cancel.clone()).await,
        };
        let follow = self.follow_ups();
        let outcome = match executed {
            Ok(executed) => match follow.while_held(&executed).await {
                Ok(()) => Ok(executed.outcome),
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        };
        grace.abort();
        heartbeat.abort();
        // The run is over: its state credentials die, and any state lock it still holds goes.
        if let Err(err) = ctx.store.revoke_state_credentials(run.id).await {
            warn!(error = %format!("{err:#}"), "revoking the run's state credentials failed");
        }
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
            return Ok(None);
        }
        if !ctx.store.finish(run.id, &self.name, &outcome).await? {
            warn!("run was taken from this worker before it finished; outcome not recorded");
            return Ok(None);
        }
        if run.kind == RunKind::Apply
            && outcome.status == RunStatus::Succeeded
            && let Err(err) = self.record_deployment(&run).await
        {
            warn!(error = %format!("{err:#}"), "recording the deployment's commits failed");
        }
        follow.after_finish(&run, &outcome).await;
        match outcome.status {
            RunStatus::Succeeded => info!("run succeeded"),
            status => {
                warn!(%status, error = outcome.error.as_deref().unwrap_or(""), "run did not succeed")
            }
        }
        Ok(Some(outcome.status))
    }

    /// Records the commits a successful apply carried to its stack (since the stack's previous
    /// successful apply), for the delivery metrics' lead time and revert detection.
    async fn record_deployment(&self, run: &Run) -> Result<()> {
        let ctx = &self.ctx;
        let mirror = ctx
            .mirrors
            .get(&run.repo)
            .with_context(|| format!("no mirror for repository {}", run.repo))?
            .clone();
        let previous = ctx.store.last_deployed_commit(run.id).await?;
        let commit = run.commit.clone();
        let carried = tokio::task::spawn_blocking(move || -> Result<_> {
            let repo = crate::repo::open(&mirror)?;
            let head = git2::Oid::from_str(&commit)?;
            let since = previous
                .as_deref()
                .and_then(|s| git2::Oid::from_str(s).ok());
            crate::repo::carried_commits(&repo, head, since, 1000)
        })
        .await
        .context("reading the deployment's commits panicked")??;
        let now = chrono::Utc::now();
        for commit in &carried {
            crate::telemetry::lead_time((now - commit.committed_at).num_seconds() as f64);
        }
        let commits: Vec<crate::store::DeployedCommit> = carried
            .into_iter()
            .map(|c| crate::store::DeployedCommit {
                revert: crate::delivery::is_revert(&c.summary),
                sha: c.sha,
                committed_at: c.committed_at,
            })
            .collect();
        info!(commits = commits.len(), "deployment recorded");
        ctx.store.record_deployment(run.id, &commits).await
    }

    /// Exports what the run's stack reads of its commit into a fresh workspace and builds the runner request for it,
    /// with the run's state backend: a credential for this stack only, and the stack's state
    /// routes served on a Unix socket in the workspace for as long as the returned server lives.
    async fn request(
        &self,
        run: &Run,
        logs: &mpsc::Sender<LogLine>,
    ) -> Result<(PlanRequest, StateServer)> {
        let ctx = &self.ctx;
        let vars = self.variables(run, logs).await?;
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
        let nudge = ctx.nudges.get(&run.repo);
        super::fetched::until_fetched(mirror, &run.commit, nudge, logs, super::fetched::PATIENCE)
            .await?;
        let (mirror, root, commit) = (mirror.clone(), ctx.workspaces.clone(), run.commit.clone());
        let stack = run.stack.clone();
        let index = ctx.indexes.get(&run.repo).cloned();
        let (workspace, instance) = tokio::task::spawn_blocking(move || {
            let repo = crate::repo::open(&mirror)?;
            let oid = git2::Oid::from_str(&commit).with_context(|| format!("commit {commit}"))?;
            let mut index = index.as_ref().map(|i| i.blocking_lock());
            Workspace::export_instance(&root, &repo, oid, &stack, index.as_deref_mut())
        })
        .await
        .context("workspace export panicked")??;
        let (state, server) = self.state_backend(run, &workspace).await?;
        // The directory the steps run in: the instance's stack (`stacks/app` for
        // `stacks/app@prod`).
        let dir = instance
            .as_ref()
            .map_or(run.stack.clone(), |s| s.dir().to_string());
        let request = PlanRequest {
            instance: instance
                .as_ref()
                .map(runner::Instance::of)
                .unwrap_or_default(),
            provider_cache: ctx.provider_cache.clone(),
            lifeline: Some(ctx.exe.clone()),
            workspace,
            stack: dir,
            runner,
            sandbox: ctx.sandbox,
            variables: vars.variables,
            secrets: vars.secrets,
            files: vars.files,
            repo: run.repo.clone(),
            commit: run.commit.clone(),
            key: ctx.key.clone(),
            state: Some(state),
        };
        Ok((request, server))
    }

    /// The variable sets that match the run (its stack, tags and phase), with their secrets
    /// read now, so a rotated secret needs no restart. The run log names the sets and the
    /// variables they set, never a value; a missing secret fails this run only.
    async fn variables(&self, run: &Run, logs: &mpsc::Sender<LogLine>) -> Result<Resolved> {
        let ctx = &self.ctx;
        if ctx.variables.is_empty() {
            return Ok(Resolved::default());
        }
        let settings = ctx.store.stack_settings(&run.repo, &run.stack).await?;
        let phase = match run.kind {
            RunKind::Apply => Phase::Apply,
            RunKind::Plan | RunKind::Drift => Phase::Plan,
        };
        let (dir, environment) = crate::stacks::split_instance(&run.stack);
        let environment = settings.environment.as_deref().or(environment);
        let target = Target {
            stack: dir,
            tags: &settings.tags,
            environment,
            phase,
            pull_request: run.pr_number.is_some(),
        };
        let sets = variables::matching(&ctx.variables, &target);
        let resolved = variables::resolve(
            &sets,
            |name| std::env::var(name).ok(),
            |path| {
                std::fs::File::open(path)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        )
        .with_context(|| format!("stack {}", run.stack))?;
        if !sets.is_empty() {
            let names: Vec<String> = sets
                .iter()
                .map(|s| format!("{} ({})", s.name, s.names().join(", ")))
                .collect();
            let text = format!("variable sets for {}: {}", phase.as_str(), names.join("; "));
            info!("{text}");
            let _ = logs
                .send(LogLine {
                    step: "variables".into(),
                    stream: runner::Stream::System,
                    text,
                })
                .await;
        }
        Ok(resolved)
    }

    /// Mints the run's state credential and serves its stack's state routes on a Unix socket
    /// inside the workspace (the only Tidemark endpoint a sandboxed step can reach).
    async fn state_backend(
        &self,
        run: &Run,
        workspace: &Workspace,
    ) -> Result<(runner::StateBackend, StateServer)> {
        let ctx = &self.ctx;
        let credential = ctx
            .store
            .mint_state_credential(run.id, &run.repo, &run.stack)
            .await
            .with_context(|| format!("minting the state credential of run {}", run.id))?;
        let socket = workspace.path().join("state.sock");
        let listener = tokio::net::UnixListener::bind(&socket).with_context(|| {
            format!(
                "binding the state socket {} (a Unix socket path must be shorter than 108 bytes: \
                 choose a shorter data_dir)",
                socket.display()
            )
        })?;
        let api = crate::state_backend::StateApi {
            store: ctx.store.clone(),
            key: ctx.key.clone(),
            only: Some((run.repo.clone(), run.stack.clone())),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(crate::state_backend::serve_socket(
            listener,
            api,
            shutdown.clone(),
        ));
        let backend = runner::StateBackend {
            socket,
            path: crate::state_backend::state_path(&run.repo, &run.stack),
            username: credential.username,
            password: credential.password,
            exe: ctx.exe.clone(),
        };
        Ok((backend, StateServer { task, shutdown }))
    }

    /// The follow-ups of this instance's runs.
    fn follow_ups(&self) -> FollowUps<'_> {
        let ctx = &self.ctx;
        FollowUps {
            store: &ctx.store,
            policies: &ctx.policies,
            mirrors: &ctx.mirrors,
            indexes: &ctx.indexes,
            drift: ctx.drift.as_ref(),
            work: &ctx.work,
            pr_refresh: &ctx.pr_refresh,
        }
    }

    /// Plans the stack and stores the plan artifact.
    async fn plan(
        &self,
        run: &Run,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> Result<Executed> {
        let ctx = &self.ctx;
        // The run holds the stack, so no apply moves the state between this read and the plan.
        let state_serial = ctx.store.latest_state_serial(&run.repo, &run.stack).await?;
        let (request, _server) = self.request(run, &logs).await?;
        let outcome = runner::plan(request, logs, cancel).await;
        let summary = outcome
            .summary
            .as_ref()
            .map(serde_json::to_value)
            .transpose()?;
        let result = RunOutcome {
            status: status(outcome.status),
            exit_code: outcome.exit_code,
            error: outcome.error,
            summary,
        };
        let mut plan = None;
        if let Some(artifact) = &outcome.artifact {
            let bytes = artifact.plan_encrypted.len() + artifact.plan_json.len();
            anyhow::ensure!(
                bytes <= MAX_ARTIFACT_BYTES,
                "the plan of run {} is {} MiB compressed, over the {} MiB a run may store; \
                 split the stack",
                run.id,
                bytes >> 20,
                MAX_ARTIFACT_BYTES >> 20
            );
            ctx.store
                .save_artifact(&StoredArtifact {
                    run_id: run.id,
                    digest: artifact.digest.clone(),
                    binding: serde_json::to_string(&artifact.binding)?,
                    plan_encrypted: artifact.plan_encrypted.clone(),
                    plan_json: artifact.plan_json.clone(),
                    created_at: chrono::Utc::now(),
                    state_serial,
                    state_lineage: None,
                })
                .await
                .context("storing the plan artifact")?;
            if result.status == RunStatus::Succeeded {
                let json = crate::crypto::decompress(&artifact.plan_json)
                    .context("reading the plan JSON back")?;
                let json: serde_json::Value =
                    serde_json::from_slice(&json).context("reading the plan JSON back")?;
                plan = Some((artifact.digest.clone(), json));
            }
        }
        Ok(Executed {
            run: run.clone(),
            outcome: result,
            plan,
            applied: None,
        })
    }

    /// Applies exactly the stored plan of the run's plan run. The runner refuses an artifact
    /// whose binding (commit, stack, runner, tool version, lock file, variables) has changed.
    async fn apply(
        &self,
        run: &Run,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> Result<Executed> {
        let plan_run = run
            .plan_run_id
            .with_context(|| format!("apply run {} names no plan run", run.id))?;
        let plan = self.ctx.store.run(plan_run).await?;
        let decision = apply::recheck(&self.ctx.store, run.id, &plan).await?;
        if !decision.allowed {
            return Ok(Executed {
                run: run.clone(),
                outcome: RunOutcome {
                    status: RunStatus::Failed,
                    exit_code: None,
                    error: Some(format!("apply gate refused: {}", decision.reasons())),
                    summary: None,
                },
                plan: None,
                applied: None,
            });
        }
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
        let (request, _server) = self.request(run, &logs).await?;
        let outcome = runner::apply(
            runner::ApplyRequest {
                run: request,
                artifact,
            },
            logs,
            cancel,
        )
        .await;
        // A stack with its own backend: its new state was pulled after the apply. (A stack
        // kept in Tidemark stored its versions itself, through the socket, during the apply.)
        if let Some(state) = &outcome.state {
            let version = self
                .ctx
                .store
                .record_state(&run.repo, &run.stack, Some(run.id), state, &self.ctx.key)
                .await
                .with_context(|| {
                    format!(
                        "storing the state of {} after apply run {}",
                        run.stack, run.id
                    )
                })?;
            info!(
                serial = version.serial,
                "state version stored from state pull"
            );
        }
        let status = status(outcome.status);
        let outputs_changed = apply::outputs_change(&plan);
        Ok(Executed {
            run: run.clone(),
            outcome: RunOutcome {
                status,
                exit_code: outcome.exit_code,
                error: outcome.error,
                summary: Some(serde_json::json!({
                    "plan_run": plan_run,
                    "outputs_changed": outputs_changed,
                })),
            },
            plan: None,
            applied: Some(Applied {
                plan_run,
                outputs_changed,
            }),
        })
    }
}

/// A run's state socket server; stopped when dropped (the run is over).
struct StateServer {
    task: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Drop for StateServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Connections still open belong to processes of a run that has ended.
        self.task.abort();
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

/// The most a run stores of its compressed plan (binary and JSON together).
const MAX_ARTIFACT_BYTES: usize = 64 << 20;

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

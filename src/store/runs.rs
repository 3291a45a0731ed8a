//! Runs: the queue (enqueue, claim with a lease, heartbeat, finish), recovery of runs whose
//! worker died, logs and plan artifacts.
//!
//! The queue's guarantees come from the database, not from this process: a claim is one
//! atomic statement, and the partial unique index `runs_one_running_per_stack` means at most
//! one run per stack is `running` at any time, across every Tidemark instance.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::BeginWrite;
use super::{
    CommitBatch, LogEntry, NewRun, Run, RunKind, RunOutcome, Store, StoredArtifact, on_pool,
};

/// Inserts one run inside a transaction (superseding older queued plans of its stack) and
/// evaluates to its id. A macro because it runs on either backend's transaction type.
macro_rules! insert_run {
    ($tx:ident, $run:expr, $now:expr) => {
        insert_run!($tx, $run, $now, $run.plan_run)
    };
    ($tx:ident, $run:expr, $now:expr, $plan_run:expr) => {{
        let run: &NewRun = $run;
        if run.kind == RunKind::Plan {
            sqlx::query(
                "UPDATE runs SET status = 'superseded', finished_at = $1, \
                 error = 'superseded by commit ' || $2 \
                 WHERE repo_id = $3 AND stack_path = $4 AND kind = 'plan' \
                 AND status = 'queued' AND commit_sha <> $2 AND pr_number IS NOT DISTINCT FROM $5",
            )
            .bind($now)
            .bind(&run.commit)
            .bind(run.repo_id)
            .bind(&run.stack)
            .bind(run.pr_number)
            .execute(&mut *$tx)
            .await?;
        }
        let priority = if run.kind == RunKind::Drift { -1 } else { 0 };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (repo_id, stack_path, commit_sha, kind, status, reason, created_at, priority, plan_run_id, transitive, pr_number, reviewed_run_id) \
             VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(run.repo_id)
        .bind(&run.stack)
        .bind(&run.commit)
        .bind(run.kind.as_str())
        .bind(&run.reason)
        .bind($now)
        .bind(priority)
        .bind($plan_run)
        .bind(run.transitive)
        .bind(run.pr_number)
        .bind(run.reviewed_run)
        .fetch_one(&mut *$tx)
        .await?;
        id
    }};
}

pub(super) use insert_run;

macro_rules! insert_dep {
    ($tx:ident, $run:expr, $upstream:expr) => {
        sqlx::query("INSERT INTO run_deps (run_id, upstream_id) VALUES ($1, $2)")
            .bind($run)
            .bind($upstream)
            .execute(&mut *$tx)
            .await?
    };
}

pub(super) const RUN_COLUMNS: &str = "r.id, p.name AS repo, r.stack_path AS stack, r.commit_sha AS \"commit\", \
     r.kind, r.status, r.reason, r.created_at, r.started_at, r.finished_at, r.exit_code, r.error, \
     r.summary AS summary_json, r.worker, r.attempt, r.plan_run_id, r.transitive, r.gate AS gate_json, \
     r.pr_number, r.reviewed_run_id";

/// What recovery found: interrupted plans and drift checks (each retried as a new run) and
/// interrupted applies (left for an operator, their stacks locked).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub requeued: Vec<i64>,
    /// The retries queued for `requeued`, in the same order.
    pub retries: Vec<i64>,
    pub interrupted: Vec<i64>,
}

impl Store {
    /// Queues runs in one transaction. A plan supersedes the queued, not yet started plans of
    /// older commits for the same stack. `after` in each `NewRun` holds run ids. Returns the
    /// new ids in order.
    pub async fn enqueue(&self, runs: &[NewRun]) -> Result<Vec<i64>> {
        let now = Utc::now();
        let mut ids = Vec::with_capacity(runs.len());
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for run in runs {
                let id = insert_run!(tx, run, now);
                for upstream in &run.after {
                    insert_dep!(tx, id, *upstream);
                }
                ids.push(id);
            }
            tx.commit().await?;
        });
        Ok(ids)
    }

    /// Queues runs in one transaction like [`Store::enqueue`], with `after` holding indexes of
    /// earlier runs in `runs` (as in a [`CommitBatch`]).
    pub async fn enqueue_indexed(&self, runs: &[NewRun]) -> Result<Vec<i64>> {
        let now = Utc::now();
        let mut ids: Vec<i64> = Vec::with_capacity(runs.len());
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for run in runs {
                let id = insert_run!(tx, run, now);
                for index in &run.after {
                    let upstream = ids
                        .get(*index as usize)
                        .copied()
                        .with_context(|| format!("run of {} waits for entry {index}, which comes later", run.stack))?;
                    insert_dep!(tx, id, upstream);
                }
                ids.push(id);
            }
            tx.commit().await?;
        });
        Ok(ids)
    }

    /// Fails a queued run at once with `error` (a stack that cannot be planned).
    pub async fn fail_queued(&self, run_id: i64, error: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE runs SET status = 'failed', finished_at = $1, error = $2 WHERE id = $3 AND status = 'queued'")
                .bind(Utc::now())
                .bind(error)
                .bind(run_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records a new head commit and queues its runs, all in one transaction, at most once
    /// across every instance: the commit row is the claim, so when two pollers see the same
    /// commit, the second finds it recorded and queues nothing (`None`). `after` in each run
    /// holds indexes of earlier runs in `batch.runs`; `batch.failed` marks runs failed at once.
    pub async fn queue_commit(&self, batch: &CommitBatch<'_>) -> Result<Option<Vec<i64>>> {
        let now = Utc::now();
        let mut ids: Vec<i64> = Vec::with_capacity(batch.runs.len());
        let claimed = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let claimed = sqlx::query(
                "INSERT INTO commits (repo_id, branch, sha, parent_sha, author, message, seen_at, processed_at, error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT (repo_id, branch, sha) DO NOTHING",
            )
            .bind(batch.repo_id)
            .bind(batch.branch)
            .bind(&batch.info.sha)
            .bind(batch.parent)
            .bind(&batch.info.author)
            .bind(&batch.info.message)
            .bind(now)
            .bind(batch.error)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if claimed {
                for run in &batch.runs {
                    let plan_run = match run.plan_run {
                        Some(index) => Some(ids.get(index as usize).copied().with_context(|| {
                            format!("apply of {} names batch entry {index}, which comes later", run.stack)
                        })?),
                        None => None,
                    };
                    let id = insert_run!(tx, run, now, plan_run);
                    for index in &run.after {
                        let upstream = ids
                            .get(*index as usize)
                            .copied()
                            .with_context(|| format!("run of {} waits for batch entry {index}, which comes later", run.stack))?;
                        insert_dep!(tx, id, upstream);
                    }
                    ids.push(id);
                }
                for (index, error) in &batch.failed {
                    sqlx::query("UPDATE runs SET status = 'failed', finished_at = $1, error = $2 WHERE id = $3")
                        .bind(now)
                        .bind(error)
                        .bind(ids.get(*index).copied().unwrap_or(-1))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            claimed
        });
        Ok(claimed.then_some(ids))
    }

    /// Claims the oldest runnable run for `worker`, holding it for `lease`. A run is runnable
    /// when it is queued, no other run of its stack is running, its stack is not locked, its
    /// upstream runs have all finished, and it is no apply while applies are frozen. Returns
    /// `None` when there is nothing to do (or another worker won the race).
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Run>> {
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(lease)?;
        let pick = "SELECT q.id FROM runs q JOIN repos p ON p.id = q.repo_id WHERE q.status = 'queued' \
             AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.repo_id = q.repo_id \
                 AND o.stack_path = q.stack_path AND o.status = 'running') \
             AND NOT EXISTS (SELECT 1 FROM stack_locks l WHERE l.repo_id = q.repo_id \
                 AND l.stack_path = q.stack_path) \
             AND (q.kind <> 'apply' OR NOT EXISTS (SELECT 1 FROM apply_freeze)) \
             AND (p.max_concurrency IS NULL OR (SELECT COUNT(*) FROM runs c \
                 WHERE c.repo_id = q.repo_id AND c.status = 'running') < p.max_concurrency) \
             AND NOT EXISTS (SELECT 1 FROM run_deps d JOIN runs u ON u.id = d.upstream_id \
                 WHERE d.run_id = q.id AND u.status IN ('queued', 'running')) \
             ORDER BY q.priority DESC, q.id LIMIT 1";
        // PostgreSQL lets concurrent claimers skip each other's candidate rows; SQLite runs one
        // writer at a time, so the plain sub-select is already atomic there.
        let sql = match self.backend {
            super::Backend::Sqlite(_) => format!(
                "UPDATE runs SET status = 'running', worker = $1, started_at = $2, \
                 lease_expires_at = $3, attempt = attempt + 1 WHERE id = ({pick}) RETURNING id"
            ),
            super::Backend::Postgres(_) => format!(
                "UPDATE runs SET status = 'running', worker = $1, started_at = $2, \
                 lease_expires_at = $3, attempt = attempt + 1 WHERE id = ({pick} FOR UPDATE OF q SKIP LOCKED) RETURNING id"
            ),
        };
        let claimed: Result<Option<i64>, sqlx::Error> = on_pool!(self, pool => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(worker)
                .bind(now)
                .bind(expires)
                .fetch_optional(pool)
                .await
        });
        match claimed {
            Ok(Some(id)) => Ok(Some(self.run(id).await?)),
            Ok(None) => Ok(None),
            // Two instances picked two queued runs of one stack at once: the stack lock (the
            // unique index) let one through. The loser simply finds nothing this time.
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => Ok(None),
            Err(err) => Err(err).context("claiming a run"),
        }
    }

    /// Extends the lease of a run this worker holds. Returns false when the run is no longer
    /// this worker's (its lease expired and recovery took it): the worker must stop it.
    pub async fn heartbeat(&self, run_id: i64, worker: &str, lease: Duration) -> Result<bool> {
        let expires = Utc::now() + chrono::Duration::from_std(lease)?;
        let rows = on_pool!(self, pool => {
            sqlx::query("UPDATE runs SET lease_expires_at = $1 WHERE id = $2 AND worker = $3 AND status = 'running'")
                .bind(expires)
                .bind(run_id)
                .bind(worker)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(rows == 1)
    }

    /// Records how a run ended. Only the worker holding the run may finish it.
    pub async fn finish(&self, run_id: i64, worker: &str, outcome: &RunOutcome) -> Result<bool> {
        let summary = outcome.summary.as_ref().map(|value| value.to_string());
        let changes = outcome
            .summary
            .as_ref()
            .and_then(super::overview::change_count);
        let rows = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE runs SET status = $1, finished_at = $2, exit_code = $3, error = $4, \
                 summary = $5, changes = $8, lease_expires_at = NULL \
                 WHERE id = $6 AND worker = $7 AND status = 'running'",
            )
            .bind(outcome.status.as_str())
            .bind(Utc::now())
            .bind(outcome.exit_code)
            .bind(&outcome.error)
            .bind(summary)
            .bind(run_id)
            .bind(worker)
            .bind(changes)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(rows == 1)
    }

    /// Takes back runs whose lease expired before `now`, or that a worker whose name starts
    /// with `worker` held when it stopped (pass the instance's prefix at start-up). Plans and drift checks go back to the queue; an
    /// apply is never re-run on its own: it becomes `interrupted` and its stack stays locked.
    pub async fn recover(&self, now: DateTime<Utc>, worker: Option<&str>) -> Result<Recovered> {
        let stale: Vec<(i64, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, kind FROM runs WHERE status = 'running' \
                 AND (lease_expires_at < $1 OR ($2 <> '' AND worker LIKE $2 || '%')) ORDER BY id",
            )
            .bind(now)
            .bind(worker.unwrap_or(""))
            .fetch_all(pool)
            .await?
        });
        self.take_back(stale, now).await
    }

    /// Releases a run this worker holds but stopped (at shutdown): a plan or drift check goes
    /// back to the queue, an apply is marked interrupted.
    pub async fn release(&self, run_id: i64, worker: &str) -> Result<Recovered> {
        let held: Vec<(i64, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, kind FROM runs WHERE id = $1 AND worker = $2 AND status = 'running'")
                .bind(run_id)
                .bind(worker)
                .fetch_all(pool)
                .await?
        });
        self.take_back(held, Utc::now()).await
    }

    /// Takes back runs whose worker is gone. Each run is handled in one transaction, guarded by
    /// `status = 'running'`, so two instances recovering at once cannot both take one run.
    async fn take_back(&self, stale: Vec<(i64, String)>, now: DateTime<Utc>) -> Result<Recovered> {
        let mut recovered = Recovered::default();
        for (id, kind) in stale {
            let apply = kind == RunKind::Apply.as_str();
            let error = if apply {
                "the worker stopped during the apply: check the state, then run tidemark unlock"
                    .to_string()
            } else {
                "interrupted: its worker stopped; a retry was queued".to_string()
            };
            let retry: Option<Option<i64>> = on_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                let rows = sqlx::query(
                    "UPDATE runs SET status = 'interrupted', finished_at = $1, lease_expires_at = NULL, error = $2 \
                     WHERE id = $3 AND status = 'running'",
                )
                .bind(now)
                .bind(&error)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if rows != 1 {
                    None
                } else if apply {
                    // An apply is never re-run on its own: its stack stays locked until an
                    // operator has looked at the state and unlocks it.
                    sqlx::query(
                        "INSERT INTO stack_locks (repo_id, stack_path, run_id, reason, created_at) \
                         SELECT repo_id, stack_path, id, $1, $2 FROM runs WHERE id = $3 \
                         ON CONFLICT (repo_id, stack_path) DO NOTHING",
                    )
                    .bind("an apply was interrupted: check the state, then unlock")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Some(None)
                } else {
                    // A plan or drift check is queued again as a new run, so the history shows
                    // the interrupted attempt; it inherits the upstream runs it waited for, and
                    // the runs that waited for it now wait for the retry.
                    let retry: i64 = sqlx::query_scalar(
                        "INSERT INTO runs (repo_id, stack_path, commit_sha, kind, status, reason, created_at, priority, plan_run_id, transitive) \
                         SELECT repo_id, stack_path, commit_sha, kind, 'queued', 'retry of run ' || CAST(id AS TEXT), $1, priority, plan_run_id, transitive \
                         FROM runs WHERE id = $2 RETURNING id",
                    )
                    .bind(now)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query("INSERT INTO run_deps (run_id, upstream_id) SELECT $1, upstream_id FROM run_deps WHERE run_id = $2")
                        .bind(retry)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE run_deps SET upstream_id = $1 WHERE upstream_id = $2")
                        .bind(retry)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Some(Some(retry))
                }
            });
            match retry {
                Some(Some(retry)) => {
                    recovered.requeued.push(id);
                    recovered.retries.push(retry);
                }
                Some(None) => recovered.interrupted.push(id),
                None => {}
            }
        }
        Ok(recovered)
    }

    /// One run by id.
    pub async fn run(&self, id: i64) -> Result<Run> {
        self.find_run(id)
            .await?
            .with_context(|| format!("run {id} does not exist"))
    }

    pub async fn find_run(&self, id: i64) -> Result<Option<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN repos p ON p.id = r.repo_id WHERE r.id = $1"
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
        }))
    }

    /// Appends log lines to a run (already redacted by the runner).
    pub async fn append_logs(&self, run_id: i64, lines: &[(String, String, String)]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (step, stream, text) in lines {
                sqlx::query("INSERT INTO run_logs (run_id, step, stream, text, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(run_id)
                    .bind(step)
                    .bind(stream)
                    .bind(text)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// A run's log, in order.
    pub async fn logs(&self, run_id: i64) -> Result<Vec<LogEntry>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, LogEntry>(
                "SELECT step, stream, text, created_at FROM run_logs WHERE run_id = $1 ORDER BY id",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Stores a run's plan artifact (replacing an earlier one of the same run).
    pub async fn save_artifact(&self, artifact: &StoredArtifact) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM plan_artifacts WHERE run_id = $1").bind(artifact.run_id).execute(pool).await?;
            sqlx::query(
                "INSERT INTO plan_artifacts (run_id, digest, binding, plan_encrypted, plan_json, created_at, state_serial, state_lineage) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(artifact.run_id)
            .bind(&artifact.digest)
            .bind(&artifact.binding)
            .bind(&artifact.plan_encrypted)
            .bind(&artifact.plan_json)
            .bind(artifact.created_at)
            .bind(artifact.state_serial)
            .bind(&artifact.state_lineage)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn artifact(&self, run_id: i64) -> Result<Option<StoredArtifact>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, StoredArtifact>(
                "SELECT run_id, digest, binding, plan_encrypted, plan_json, created_at, state_serial, state_lineage \
                 FROM plan_artifacts WHERE run_id = $1",
            )
            .bind(run_id)
            .fetch_optional(pool)
            .await?
        }))
    }
}

impl Store {
    /// The queued runs in the order workers claim them (priority, then age): a run's place in
    /// the queue for the dashboard.
    pub async fn queue_order(&self) -> Result<Vec<i64>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT id FROM runs WHERE status = 'queued' ORDER BY priority DESC, id",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// A run's log lines after the line with id `after`, with their ids (for a live view).
    pub async fn logs_after(&self, run_id: i64, after: i64) -> Result<Vec<(i64, LogEntry)>> {
        let rows: Vec<(i64, String, String, String, DateTime<Utc>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, step, stream, text, created_at FROM run_logs \
                 WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT 1000",
            )
            .bind(run_id)
            .bind(after)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, step, stream, text, created_at)| {
                (
                    id,
                    LogEntry {
                        step,
                        stream,
                        text,
                        created_at,
                    },
                )
            })
            .collect())
    }

    /// Locks a stack by hand: no run of it starts until it is unlocked. Returns false when it
    /// is locked already (the existing lock and its reason stay).
    pub async fn lock(&self, repo: &str, stack: &str, reason: &str) -> Result<bool> {
        let rows = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO stack_locks (repo_id, stack_path, run_id, reason, created_at) \
                 SELECT id, $2, NULL, $3, $4 FROM repos WHERE name = $1 \
                 ON CONFLICT (repo_id, stack_path) DO NOTHING",
            )
            .bind(repo)
            .bind(stack)
            .bind(reason)
            .bind(Utc::now())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(rows == 1)
    }
}

//! What `/metrics` and the delivery metrics read: counts over the shared database (so every
//! instance reports the same figures), the commits each deployment carried, and the apply and
//! drift history of a window.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::{Store, on_pool};
use crate::delivery::{Apply, DriftSpan};

/// Counts at one moment.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// (kind, queued runs).
    pub queued: Vec<(String, i64)>,
    /// (kind, running runs), over every instance.
    pub running: Vec<(String, i64)>,
    /// When the oldest queued run was queued.
    pub oldest_queued: Option<DateTime<Utc>>,
    /// (repo, stack instances not removed).
    pub stacks: Vec<(String, i64)>,
    /// (drift state, stack instances).
    pub drift: Vec<(String, i64)>,
    /// When the least recently checked stack was last checked for drift.
    pub oldest_drift_check: Option<DateTime<Utc>>,
    /// Locked stack instances.
    pub locks: i64,
    /// Notifications not yet delivered, and when the oldest was written.
    pub outbox_pending: i64,
    pub outbox_oldest: Option<DateTime<Utc>>,
}

/// A commit a deployment carried.
#[derive(Debug, Clone)]
pub struct DeployedCommit {
    pub sha: String,
    pub committed_at: DateTime<Utc>,
    pub revert: bool,
}

/// Which history the delivery metrics read.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub repo: Option<String>,
    /// A stack path, or a stack directory (every environment of it).
    pub stack: Option<String>,
}

type ApplyRow = (String, String, String, DateTime<Utc>, Option<String>, i64);

impl Store {
    /// The gauges `/metrics` reports.
    pub async fn gauges(&self) -> Result<Gauges> {
        Ok(on_pool!(self, pool => {
            let by_kind = |status: &'static str| {
                sqlx::query_as::<_, (String, i64)>(
                    "SELECT kind, COUNT(*) FROM runs WHERE status = $1 GROUP BY kind ORDER BY kind",
                )
                .bind(status)
            };
            let queued = by_kind("queued").fetch_all(pool).await?;
            let running = by_kind("running").fetch_all(pool).await?;
            let oldest_queued: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT created_at FROM runs WHERE status = 'queued' ORDER BY id LIMIT 1",
            )
            .fetch_optional(pool)
            .await?;
            let stacks: Vec<(String, i64)> = sqlx::query_as(
                "SELECT p.name, COUNT(s.id) FROM repos p LEFT JOIN stacks s \
                 ON s.repo_id = p.id AND s.removed = $1 GROUP BY p.name ORDER BY p.name",
            )
            .bind(false)
            .fetch_all(pool)
            .await?;
            let drift: Vec<(String, i64)> = sqlx::query_as(
                "SELECT state, COUNT(*) FROM drift_states GROUP BY state ORDER BY state",
            )
            .fetch_all(pool)
            .await?;
            let oldest_drift_check: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT checked_at FROM drift_states ORDER BY checked_at LIMIT 1")
                    .fetch_optional(pool)
                    .await?;
            let locks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stack_locks")
                .fetch_one(pool)
                .await?;
            let outbox_pending: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM notification_outbox WHERE status = 'pending'",
            )
            .fetch_one(pool)
            .await?;
            let outbox_oldest: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT created_at FROM notification_outbox WHERE status = 'pending' \
                 ORDER BY id LIMIT 1",
            )
            .fetch_optional(pool)
            .await?;
            Gauges {
                queued,
                running,
                oldest_queued,
                stacks,
                drift,
                oldest_drift_check,
                locks,
                outbox_pending,
                outbox_oldest,
            }
        }))
    }

    /// The commit the stack's last successful apply before `run_id` applied, if any.
    pub async fn last_deployed_commit(&self, run_id: i64) -> Result<Option<String>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT d.commit_sha FROM runs d JOIN runs r ON r.repo_id = d.repo_id \
                 AND r.stack_path = d.stack_path WHERE r.id = $1 AND d.id < $1 \
                 AND d.kind = 'apply' AND d.status = 'succeeded' ORDER BY d.id DESC LIMIT 1",
            )
            .bind(run_id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Records the commits a successful apply carried (once; a second call changes nothing).
    pub async fn record_deployment(&self, run_id: i64, commits: &[DeployedCommit]) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for commit in commits {
                sqlx::query(
                    "INSERT INTO deployment_commits (run_id, sha, committed_at, revert) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, sha) DO NOTHING",
                )
                .bind(run_id)
                .bind(&commit.sha)
                .bind(commit.committed_at)
                .bind(commit.revert)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Marks a finished apply failed (it ran, but broke what it deployed): the delivery
    /// metrics count it as a failure. Returns false when the run is not a finished apply.
    pub async fn mark_failed(&self, run_id: i64, reason: &str) -> Result<bool> {
        let rows = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE runs SET marked_failed = $1 WHERE id = $2 AND kind = 'apply' \
                 AND status = 'succeeded'",
            )
            .bind(reason)
            .bind(run_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(rows == 1)
    }

    /// The finished applies and drift stretches since `from`, with each deployment's carried
    /// commits: what [`crate::delivery::dora`] reads.
    pub async fn delivery_history(
        &self,
        filter: &HistoryFilter,
        from: DateTime<Utc>,
    ) -> Result<(Vec<Apply>, Vec<DriftSpan>)> {
        let repo = filter.repo.clone().unwrap_or_default();
        let stack = filter.stack.clone().unwrap_or_default();
        let dir = format!("{stack}@%");
        let (rows, commits, checks) = on_pool!(self, pool => {
            let rows: Vec<ApplyRow> = sqlx::query_as(
                "SELECT p.name, r.stack_path, r.status, r.finished_at, r.marked_failed, r.id \
                 FROM runs r JOIN repos p ON p.id = r.repo_id \
                 WHERE r.kind = 'apply' AND r.finished_at >= $1 \
                 AND r.status IN ('succeeded', 'failed', 'interrupted', 'timed_out') \
                 AND ($2 = '' OR p.name = $2) \
                 AND ($3 = '' OR r.stack_path = $3 OR r.stack_path LIKE $4) ORDER BY r.id",
            )
            .bind(from)
            .bind(&repo)
            .bind(&stack)
            .bind(&dir)
            .fetch_all(pool)
            .await?;
            let commits: Vec<(i64, DateTime<Utc>, bool)> = sqlx::query_as(
                "SELECT c.run_id, c.committed_at, c.revert FROM deployment_commits c \
                 JOIN runs r ON r.id = c.run_id JOIN repos p ON p.id = r.repo_id \
                 WHERE r.finished_at >= $1 AND ($2 = '' OR p.name = $2) \
                 AND ($3 = '' OR r.stack_path = $3 OR r.stack_path LIKE $4) ORDER BY c.run_id",
            )
            .bind(from)
            .bind(&repo)
            .bind(&stack)
            .bind(&dir)
            .fetch_all(pool)
            .await?;
            let checks: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT p.name, d.stack_path, d.result, d.checked_at FROM drift_checks d \
                 JOIN repos p ON p.id = d.repo_id WHERE d.checked_at >= $1 \
                 AND ($2 = '' OR p.name = $2) \
                 AND ($3 = '' OR d.stack_path = $3 OR d.stack_path LIKE $4) \
                 ORDER BY p.name, d.stack_path, d.id",
            )
            .bind(from)
            .bind(&repo)
            .bind(&stack)
            .bind(&dir)
            .fetch_all(pool)
            .await?;
            (rows, commits, checks)
        });
        let mut carried: std::collections::HashMap<i64, (Vec<DateTime<Utc>>, bool)> =
            std::collections::HashMap::new();
        for (run, at, revert) in commits {
            let entry = carried.entry(run).or_default();
            entry.0.push(at);
            entry.1 |= revert;
        }
        let applies = rows
            .into_iter()
            .map(|(repo, stack, status, finished_at, marked, id)| {
                let (carried, revert) = carried.remove(&id).unwrap_or_default();
                Apply {
                    stack: format!("{repo}/{stack}"),
                    succeeded: status == "succeeded",
                    marked_failed: marked.is_some(),
                    finished_at,
                    carried,
                    revert,
                }
            })
            .collect();
        let mut spans = Vec::new();
        for stack in checks.chunk_by(|a, b| (&a.0, &a.1) == (&b.0, &b.1)) {
            let mut detected = None;
            for (_, _, result, at) in stack {
                match (result.as_str(), detected) {
                    ("drifted", None) => detected = Some(*at),
                    ("in_sync", Some(since)) => {
                        spans.push(DriftSpan {
                            detected: since,
                            resolved: *at,
                        });
                        detected = None;
                    }
                    _ => {}
                }
            }
        }
        Ok((applies, spans))
    }
}

/// How far before a window the history is read, for context: the deployment a revert undoes,
/// a failure still open when the window starts.
const CONTEXT_DAYS: i64 = 90;

impl Store {
    /// The delivery metrics of `filter` over `since..until`.
    pub async fn dora(
        &self,
        filter: &HistoryFilter,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        revert_window: chrono::TimeDelta,
    ) -> Result<crate::delivery::Dora> {
        let from = since - chrono::TimeDelta::days(CONTEXT_DAYS);
        let (applies, drift) = self.delivery_history(filter, from).await?;
        let window = crate::delivery::Window {
            since,
            until,
            revert_window,
        };
        Ok(crate::delivery::dora(&applies, &drift, &window))
    }
}

impl Store {
    /// Why an operator marked a run failed, if one did.
    pub async fn marked_failed(&self, run_id: i64) -> Result<Option<String>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar::<_, Option<String>>("SELECT marked_failed FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(pool)
                .await?
                .flatten()
        }))
    }
}

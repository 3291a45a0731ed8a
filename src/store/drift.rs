//! Drift in the database: the stacks a schedule covers, queueing drift checks without doubles
//! across instances, each stack's drift state and check history, and the notification outbox
//! (claimed with a lease, so one message is sent by one instance).

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::BeginWrite;
use super::{Backend, RunStatus, Store, on_pool};
use crate::drift::{CheckResult, DriftRecord, DriftState, DriftedResource, NotificationKind};
use crate::notify::{Delivery, DeliveryStatus};

/// A stack as the drift scheduler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftStack {
    pub repo: String,
    pub stack: String,
    /// The stack's own `drift_schedule`, if it set one.
    pub drift_schedule: Option<String>,
    /// When its last drift check was queued, if ever.
    pub last_check: Option<DateTime<Utc>>,
}

/// One finished drift check, as the engine assessed it.
#[derive(Debug, Clone)]
pub struct DriftCheck<'a> {
    pub repo: &'a str,
    pub stack: &'a str,
    pub run_id: i64,
    pub commit: &'a str,
    pub result: &'a CheckResult,
    pub checked_at: DateTime<Utc>,
}

/// What the engine decided from a check and the stack's previous record.
#[derive(Debug, Clone)]
pub struct DriftDecision {
    pub record: DriftRecord,
    /// The message to put in the outbox, if the transition calls for one.
    pub message: Option<(NotificationKind, serde_json::Value)>,
}

/// What [`Store::record_drift_check`] stored.
#[derive(Debug, Clone)]
pub struct DriftSaved {
    pub decision: DriftDecision,
    pub outbox_id: Option<i64>,
}

/// A stack's drift state as `tidemark drift status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftStatus {
    pub repo: String,
    pub stack: String,
    pub state: String,
    pub since: DateTime<Utc>,
    pub fingerprint: Option<String>,
    pub resources: Vec<DriftedResource>,
    pub cause: Option<String>,
    pub checked_at: DateTime<Utc>,
    pub last_check_run: Option<i64>,
    pub error: Option<String>,
}

/// One row of a stack's drift check history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DriftCheckRow {
    pub run_id: Option<i64>,
    pub commit: String,
    pub result: String,
    pub fingerprint: Option<String>,
    pub cause: Option<String>,
    pub error: Option<String>,
    /// The message the check called for (`drifted`, `changed`, `resolved`), if any.
    pub notified: Option<String>,
    pub checked_at: DateTime<Utc>,
}

/// An outbox row, for people and tests.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub stack: Option<String>,
    pub run_id: Option<i64>,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// A DriftState, cause or notification kind as the text serde gives it.
fn text<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
}

fn status_text(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "sent",
        DeliveryStatus::Dead => "failed",
    }
}

type DeliveryRow = (
    i64,
    String,
    i32,
    i32,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
);

impl Store {
    /// Every stack not removed, with its own schedule and when its last drift check was queued.
    pub async fn drift_stacks(&self) -> Result<Vec<DriftStack>> {
        type Row = (String, String, Option<String>, Option<DateTime<Utc>>);
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT p.name, s.path, s.drift_schedule, \
                 (SELECT MAX(r.created_at) FROM runs r WHERE r.repo_id = s.repo_id \
                  AND r.stack_path = s.path AND r.kind = 'drift') \
                 FROM stacks s JOIN repos p ON p.id = s.repo_id WHERE s.removed = $1 \
                 ORDER BY p.name, s.path",
            )
            .bind(false)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(repo, stack, drift_schedule, last_check)| DriftStack {
                repo,
                stack,
                drift_schedule,
                last_check,
            })
            .collect())
    }

    /// Queues a drift check of the stack at its tracked branch's head (the commit its row was
    /// last synced at), below plans in priority. Nothing is queued (`None`) when the stack is
    /// unknown or removed, when a drift check of it is already queued or running, or when one
    /// was queued for `tick` or a later tick: every instance runs the same schedule, and the
    /// first to move the stack's row in `drift_ticks` forward queues the tick's check (two
    /// instances racing for one tick queue on the row lock, and the second finds it moved).
    pub async fn enqueue_drift(
        &self,
        repo: &str,
        stack: &str,
        tick: DateTime<Utc>,
        reason: &str,
    ) -> Result<Option<i64>> {
        let queued: Option<i64> = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let claimed: Option<i64> = sqlx::query_scalar(
                "INSERT INTO drift_ticks (repo_id, stack_path, tick) \
                 SELECT s.repo_id, s.path, $3 FROM stacks s JOIN repos p ON p.id = s.repo_id \
                 WHERE p.name = $1 AND s.path = $2 AND s.removed = $4 AND s.last_commit IS NOT NULL \
                 ON CONFLICT (repo_id, stack_path) DO UPDATE SET tick = excluded.tick \
                 WHERE drift_ticks.tick < excluded.tick RETURNING repo_id",
            )
            .bind(repo)
            .bind(stack)
            .bind(tick)
            .bind(false)
            .fetch_optional(&mut *tx)
            .await?;
            let id: Option<i64> = match claimed {
                None => None,
                Some(repo_id) => {
                    sqlx::query_scalar(
                        "INSERT INTO runs (repo_id, stack_path, commit_sha, kind, status, reason, created_at, priority) \
                         SELECT s.repo_id, s.path, s.last_commit, 'drift', 'queued', $3, $4, -1 FROM stacks s \
                         WHERE s.repo_id = $1 AND s.path = $2 \
                         AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.repo_id = s.repo_id \
                             AND r.stack_path = s.path AND r.kind = 'drift' \
                             AND (r.status IN ('queued', 'running') OR r.created_at >= $5)) \
                         RETURNING id",
                    )
                    .bind(repo_id)
                    .bind(stack)
                    .bind(reason)
                    .bind(Utc::now())
                    .bind(tick)
                    .fetch_optional(&mut *tx)
                    .await?
                }
            };
            tx.commit().await?;
            id
        });
        Ok(queued)
    }

    /// The statuses of the given runs (those that exist).
    pub async fn run_statuses(&self, ids: &[i64]) -> Result<Vec<(i64, RunStatus)>> {
        let mut out = Vec::with_capacity(ids.len());
        // Small sets (at most the drift concurrency cap): one query per chunk of ids, bound
        // one by one so the SQL is the same on both backends.
        for chunk in ids.chunks(64) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, status FROM runs WHERE id IN ({})",
                marks.join(", ")
            );
            let rows: Vec<(i64, String)> = on_pool!(self, pool => {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(pool).await?
            });
            for (id, status) in rows {
                let status = status.parse().map_err(anyhow::Error::msg)?;
                out.push((id, status));
            }
        }
        Ok(out)
    }

    /// Whether the stack's code at `commit` was applied: a succeeded apply exists at that
    /// commit, or at the commit of the stack's latest plan (later commits did not affect the
    /// stack, so its code there is the head's). A pull request's plan counts once it merged
    /// (its merge applies that plan); an open one's is not the branch's code.
    pub async fn head_applied(&self, repo: &str, stack: &str, commit: &str) -> Result<bool> {
        let count: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM runs a JOIN repos p ON p.id = a.repo_id \
                 WHERE p.name = $1 AND a.stack_path = $2 AND a.kind = 'apply' AND a.status = 'succeeded' \
                 AND (a.commit_sha = $3 OR a.commit_sha = (SELECT l.commit_sha FROM runs l \
                     WHERE l.repo_id = a.repo_id AND l.stack_path = a.stack_path AND l.kind = 'plan' \
                     AND (l.pr_number IS NULL OR EXISTS (SELECT 1 FROM pull_requests m \
                         WHERE m.repo_id = l.repo_id AND m.number = l.pr_number AND m.state = 'merged')) \
                     ORDER BY l.id DESC LIMIT 1))",
            )
            .bind(repo)
            .bind(stack)
            .bind(commit)
            .fetch_one(pool)
            .await?
        });
        Ok(count > 0)
    }

    /// A stack's drift record, if it was ever checked.
    pub async fn drift_record(&self, repo: &str, stack: &str) -> Result<Option<DriftRecord>> {
        let record: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT d.record FROM drift_states d JOIN repos p ON p.id = d.repo_id \
                 WHERE p.name = $1 AND d.stack_path = $2",
            )
            .bind(repo)
            .bind(stack)
            .fetch_optional(pool)
            .await?
        });
        record
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .with_context(|| format!("reading the drift record of {repo}:{stack}"))
    }

    /// Records a finished drift check in one transaction: reads the stack's record (locked on
    /// PostgreSQL), lets `decide` work out the new record and message, then stores the record,
    /// a history row and the outbox row together, so a message is queued exactly when its
    /// transition is stored. A check older than the one the record already holds changes
    /// nothing (`None`).
    pub async fn record_drift_check<F>(
        &self,
        check: &DriftCheck<'_>,
        decide: F,
    ) -> Result<Option<DriftSaved>>
    where
        F: FnOnce(Option<&DriftRecord>) -> DriftDecision,
    {
        let lock = match self.backend {
            Backend::Sqlite(_) => "",
            Backend::Postgres(_) => " FOR UPDATE",
        };
        let select = format!(
            "SELECT record, last_check_run FROM drift_states WHERE repo_id = $1 AND stack_path = $2{lock}"
        );
        let (repo, stack) = (check.repo, check.stack);
        let saved = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let repo_id: i64 = sqlx::query_scalar("SELECT id FROM repos WHERE name = $1")
                .bind(repo)
                .fetch_optional(&mut *tx)
                .await?
                .with_context(|| format!("repo {repo} is not in the database"))?;
            let previous: Option<(String, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(select))
                .bind(repo_id)
                .bind(stack)
                .fetch_optional(&mut *tx)
                .await?;
            let (previous, last_run) = match previous {
                Some((record, last_run)) => (
                    Some(serde_json::from_str::<DriftRecord>(&record).with_context(|| {
                        format!("reading the drift record of {repo}:{stack}")
                    })?),
                    last_run,
                ),
                None => (None, None),
            };
            if last_run.is_some_and(|last| last > check.run_id) {
                None
            } else {
                let decision = decide(previous.as_ref());
                let record = &decision.record;
                let open = record.open.as_ref();
                let resources = serde_json::to_string(
                    &open.map(|o| o.drift.resources.clone()).unwrap_or_default(),
                )?;
                sqlx::query(
                    "INSERT INTO drift_states (repo_id, stack_path, state, fingerprint, resources, cause, \
                     since, first_seen, last_seen, checked_at, last_check_run, error, record) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (repo_id, stack_path) DO UPDATE SET state = excluded.state, \
                     fingerprint = excluded.fingerprint, resources = excluded.resources, \
                     cause = excluded.cause, since = excluded.since, first_seen = excluded.first_seen, \
                     last_seen = excluded.last_seen, checked_at = excluded.checked_at, \
                     last_check_run = excluded.last_check_run, error = excluded.error, \
                     record = excluded.record",
                )
                .bind(repo_id)
                .bind(stack)
                .bind(record.state.as_str())
                .bind(open.map(|o| o.fingerprint.clone()))
                .bind(resources)
                .bind(open.and_then(|o| text(&o.cause)))
                .bind(record.since)
                .bind(open.map(|o| o.first_seen))
                .bind(open.map(|o| o.last_seen))
                .bind(record.checked_at)
                .bind(check.run_id)
                .bind(&record.error)
                .bind(serde_json::to_string(record)?)
                .execute(&mut *tx)
                .await?;
                let (result, fingerprint, cause, error) = match check.result {
                    CheckResult::InSync => (DriftState::InSync, None, None, None),
                    CheckResult::Drifted { fingerprint, cause, .. } => {
                        (DriftState::Drifted, Some(fingerprint.clone()), text(cause), None)
                    }
                    CheckResult::Error { message } => {
                        (DriftState::Error, None, None, Some(message.clone()))
                    }
                };
                let notified = decision.message.as_ref().and_then(|(kind, _)| text(kind));
                sqlx::query(
                    "INSERT INTO drift_checks (repo_id, stack_path, run_id, commit_sha, result, \
                     fingerprint, cause, error, notified, checked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(repo_id)
                .bind(stack)
                .bind(check.run_id)
                .bind(check.commit)
                .bind(result.as_str())
                .bind(fingerprint)
                .bind(cause)
                .bind(error)
                .bind(&notified)
                .bind(check.checked_at)
                .execute(&mut *tx)
                .await?;
                let outbox_id = match &decision.message {
                    Some((_, payload)) => Some(
                        sqlx::query_scalar::<_, i64>(
                            "INSERT INTO notification_outbox (repo_id, stack_path, run_id, kind, payload, \
                             status, created_at, next_attempt_at) \
                             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) RETURNING id",
                        )
                        .bind(repo_id)
                        .bind(stack)
                        .bind(check.run_id)
                        .bind(notified.as_deref().unwrap_or("drift"))
                        .bind(payload.to_string())
                        .bind(Utc::now())
                        .fetch_one(&mut *tx)
                        .await?,
                    ),
                    None => None,
                };
                tx.commit().await?;
                Some(DriftSaved { decision, outbox_id })
            }
        });
        Ok(saved)
    }

    /// Every checked stack's drift state, by repository and stack.
    pub async fn drift_statuses(&self) -> Result<Vec<DriftStatus>> {
        type Row = (
            String,
            String,
            String,
            DateTime<Utc>,
            Option<String>,
            String,
            Option<String>,
            DateTime<Utc>,
            Option<i64>,
            Option<String>,
        );
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT p.name, d.stack_path, d.state, d.since, d.fingerprint, d.resources, d.cause, \
                 d.checked_at, d.last_check_run, d.error \
                 FROM drift_states d JOIN repos p ON p.id = d.repo_id ORDER BY p.name, d.stack_path",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|r| {
                let resources = serde_json::from_str(&r.5)
                    .with_context(|| format!("reading the drifted resources of {}:{}", r.0, r.1))?;
                Ok(DriftStatus {
                    repo: r.0,
                    stack: r.1,
                    state: r.2,
                    since: r.3,
                    fingerprint: r.4,
                    resources,
                    cause: r.6,
                    checked_at: r.7,
                    last_check_run: r.8,
                    error: r.9,
                })
            })
            .collect()
    }

    /// A stack's drift checks, oldest first.
    pub async fn drift_checks(&self, repo: &str, stack: &str) -> Result<Vec<DriftCheckRow>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, DriftCheckRow>(
                "SELECT c.run_id, c.commit_sha AS \"commit\", c.result, c.fingerprint, c.cause, c.error, \
                 c.notified, c.checked_at FROM drift_checks c JOIN repos p ON p.id = c.repo_id \
                 WHERE p.name = $1 AND c.stack_path = $2 ORDER BY c.id",
            )
            .bind(repo)
            .bind(stack)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Claims the oldest due pending message for `claimer` for `lease`: it is this claimer's
    /// to send until the lease ends. On PostgreSQL concurrent claimers skip each other's rows
    /// (`FOR UPDATE SKIP LOCKED`); SQLite has one writer at a time. `None`: nothing is due.
    pub async fn outbox_claim(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Delivery>> {
        let expires = now + chrono::Duration::from_std(lease)?;
        let skip = match self.backend {
            Backend::Sqlite(_) => "",
            Backend::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE notification_outbox SET claimed_by = $1, lease_expires_at = $2 WHERE id = \
             (SELECT id FROM notification_outbox WHERE status = 'pending' AND next_attempt_at <= $3 \
              AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
              ORDER BY next_attempt_at, id LIMIT 1{skip}) \
             RETURNING id, payload, attempts, failed_sends, created_at, next_attempt_at, last_error"
        );
        let row: Option<DeliveryRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(claimer)
                .bind(expires)
                .bind(now)
                .fetch_optional(pool)
                .await?
        });
        let Some((id, payload, attempts, failed_sends, created_at, next_attempt_at, last_error)) =
            row
        else {
            return Ok(None);
        };
        Ok(Some(Delivery {
            id: Some(id),
            payload: serde_json::from_str(&payload)
                .with_context(|| format!("reading outbox message {id}"))?,
            status: DeliveryStatus::Pending,
            attempts: attempts.max(0) as u32,
            failed_sends: failed_sends.max(0) as u32,
            created_at,
            next_attempt_at,
            last_error,
        }))
    }

    /// Stores a claimed message's outcome and releases the claim. Returns false when the
    /// claim was lost (the lease ran out and another sender took the message).
    pub async fn outbox_record(&self, delivery: &Delivery, claimer: &str) -> Result<bool> {
        let id = delivery
            .id
            .context("an outbox message without an id was never stored")?;
        let sent_at = (delivery.status == DeliveryStatus::Delivered).then(Utc::now);
        let rows = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE notification_outbox SET status = $1, attempts = $2, failed_sends = $3, \
                 next_attempt_at = $4, last_error = $5, sent_at = $6, claimed_by = NULL, \
                 lease_expires_at = NULL WHERE id = $7 AND claimed_by = $8",
            )
            .bind(status_text(delivery.status))
            .bind(delivery.attempts as i32)
            .bind(delivery.failed_sends as i32)
            .bind(delivery.next_attempt_at)
            .bind(&delivery.last_error)
            .bind(sent_at)
            .bind(id)
            .bind(claimer)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(rows == 1)
    }

    /// When the next pending message is due (its lease's end if a sender holds it).
    pub async fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let rows: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT next_attempt_at, lease_expires_at FROM notification_outbox \
                 WHERE status = 'pending' ORDER BY next_attempt_at LIMIT 16",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(next, lease)| lease.map_or(next, |l| l.max(next)))
            .min())
    }

    /// Every outbox message, oldest first.
    pub async fn outbox(&self) -> Result<Vec<OutboxRow>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, OutboxRow>(
                "SELECT id, stack_path AS stack, run_id, kind, status, attempts, next_attempt_at, \
                 last_error, sent_at FROM notification_outbox ORDER BY id",
            )
            .fetch_all(pool)
            .await?
        }))
    }
}

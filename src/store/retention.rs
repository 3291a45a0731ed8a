//! The retention sweep: forgets finished runs, their log lines and their stored plans once
//! they are older than the configured ages, so the database does not grow without bound. What
//! a stack still needs is never swept: its newest run of each kind (per pull request), a plan
//! an apply that is kept was made from, and anything queued or running.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, on_pool};

/// How long each kind of history is kept after its run finished (`None`: for ever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ages {
    pub runs: Option<Duration>,
    pub logs: Option<Duration>,
    pub artifacts: Option<Duration>,
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Swept {
    pub runs: u64,
    pub log_lines: u64,
    pub artifacts: u64,
    pub deliveries: u64,
}

/// Webhook delivery ids are kept a week: GitHub redelivers within days, not weeks.
const DELIVERIES: Duration = Duration::from_secs(7 * 86_400);

/// Runs whose history a sweep may drop: finished before the cutoff `$1` and not their stack's
/// newest of their kind (per pull request). `r` qualifies the columns (`""` or `"r."`).
fn sweepable(r: &str) -> String {
    format!(
        "{r}status NOT IN ('queued', 'running') AND {r}finished_at IS NOT NULL \
         AND {r}finished_at < $1 AND {r}id NOT IN (SELECT MAX(id) FROM runs \
         GROUP BY repo_id, stack_path, kind, COALESCE(pr_number, 0))"
    )
}

/// Run ids are swept a window at a time (`$2 <= id < $3`), so one statement never holds the
/// SQLite write lock for long, whatever the size of the history.
const WINDOW: i64 = 2_000;

fn cutoff(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
}

impl Store {
    /// Sweeps what is older than `ages` at `now`. Each part is its own statement, so a sweep
    /// cut short leaves a consistent database and the next one goes on.
    pub async fn sweep(&self, ages: Ages, now: DateTime<Utc>) -> Result<Swept> {
        let mut swept = Swept::default();
        let (first, last) = self.run_id_bounds().await.context("reading run ids")?;
        let logs = format!(
            "DELETE FROM run_logs WHERE run_id >= $2 AND run_id < $3 AND run_id IN \
             (SELECT id FROM runs WHERE id >= $2 AND id < $3 AND {})",
            sweepable("")
        );
        // A plan that an apply still waits on is never swept with it.
        let artifacts = format!(
            "DELETE FROM plan_artifacts WHERE run_id >= $2 AND run_id < $3 AND run_id IN \
             (SELECT id FROM runs WHERE id >= $2 AND id < $3 AND {}) \
             AND run_id NOT IN (SELECT plan_run_id FROM runs \
               WHERE plan_run_id IS NOT NULL AND status IN ('queued', 'running'))",
            sweepable("")
        );
        // A run stays while a run that is kept points at it (an apply at its plan, a commit's
        // apply at the reviewed PR plan); runs that point at each other and are both old go
        // together.
        let runs = format!(
            "DELETE FROM runs WHERE id >= $2 AND id < $3 AND {old} \
             AND id NOT IN (SELECT COALESCE(r.plan_run_id, 0) FROM runs r WHERE NOT ({kept})) \
             AND id NOT IN (SELECT COALESCE(r.reviewed_run_id, 0) FROM runs r WHERE NOT ({kept}))",
            old = sweepable(""),
            kept = sweepable("r.")
        );
        let parts = [
            (ages.logs, &logs, &mut swept.log_lines, "run logs"),
            (
                ages.artifacts,
                &artifacts,
                &mut swept.artifacts,
                "stored plans",
            ),
            (ages.runs, &runs, &mut swept.runs, "runs"),
        ];
        for (age, sql, count, what) in parts {
            let Some(age) = age else { continue };
            let cutoff = cutoff(now, age);
            let mut lo = first;
            while lo <= last {
                *count += self
                    .exec_window(sql, cutoff, lo, lo + WINDOW)
                    .await
                    .with_context(|| format!("sweeping {what} of runs {lo}..{}", lo + WINDOW))?;
                lo += WINDOW;
            }
        }
        swept.deliveries = on_pool!(self, pool => {
            sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < $1")
                .bind(cutoff(now, DELIVERIES))
                .execute(pool)
                .await
                .context("sweeping webhook deliveries")?
                .rows_affected()
        });
        Ok(swept)
    }

    async fn run_id_bounds(&self) -> Result<(i64, i64)> {
        let (first, last): (Option<i64>, Option<i64>) = on_pool!(self, pool => {
            sqlx::query_as("SELECT MIN(id), MAX(id) FROM runs").fetch_one(pool).await?
        });
        Ok((first.unwrap_or(1), last.unwrap_or(0)))
    }

    async fn exec_window(&self, sql: &str, cutoff: DateTime<Utc>, lo: i64, hi: i64) -> Result<u64> {
        Ok(on_pool!(self, pool => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(cutoff)
                .bind(lo)
                .bind(hi)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}

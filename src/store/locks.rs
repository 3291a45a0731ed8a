//! Stack locks: which stacks are held by a running run or by an explicit lock, and unlocking.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::{StackLock, Store, on_pool};

impl Store {
    /// Every held stack: running runs first, then explicit locks.
    pub async fn locks(&self) -> Result<Vec<StackLock>> {
        type Row = (String, String, Option<i64>, String, DateTime<Utc>);
        let running: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT p.name, r.stack_path, r.id, r.kind, r.started_at FROM runs r \
                 JOIN repos p ON p.id = r.repo_id WHERE r.status = 'running' ORDER BY p.name, r.stack_path",
            )
            .fetch_all(pool)
            .await?
        });
        let explicit: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT p.name, l.stack_path, l.run_id, l.reason, l.created_at FROM stack_locks l \
                 JOIN repos p ON p.id = l.repo_id ORDER BY p.name, l.stack_path",
            )
            .fetch_all(pool)
            .await?
        });
        let mut locks: Vec<StackLock> = running
            .into_iter()
            .map(|(repo, stack, run_id, kind, since)| StackLock {
                repo,
                stack,
                kind: "run".into(),
                run_id,
                reason: format!("{kind} run in progress"),
                since,
            })
            .collect();
        locks.extend(
            explicit
                .into_iter()
                .map(|(repo, stack, run_id, reason, since)| StackLock {
                    repo,
                    stack,
                    kind: "lock".into(),
                    run_id,
                    reason,
                    since,
                }),
        );
        Ok(locks)
    }

    /// Removes the explicit lock on a stack (in `repo`, or in whichever repository has a
    /// stack at that path when `repo` is `None`). Returns how many locks were removed.
    pub async fn unlock(&self, repo: Option<&str>, stack: &str) -> Result<u64> {
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM stack_locks WHERE stack_path = $1 AND repo_id IN \
                 (SELECT id FROM repos WHERE $2 IS NULL OR name = $2)",
            )
            .bind(stack)
            .bind(repo)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }
}

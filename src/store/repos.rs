//! Repositories, the commits seen on their tracked branches, and their stacks.

use anyhow::Result;
use chrono::Utc;

use super::BeginWrite;
use super::{RepoRow, StackRow, Store, on_pool};

/// A stack to record as discovered at a commit.
#[derive(Debug, Clone)]
pub struct StackRecord {
    pub path: String,
    pub name: String,
    pub runner: Option<String>,
    pub auto_apply: bool,
    pub tags: Vec<String>,
    /// The stack's own `drift_schedule` (`None`: the repository's default applies).
    pub drift_schedule: Option<String>,
    pub drift_remediation: crate::stacks::DriftRemediation,
    /// The environment of an instance (`path` is then `DIR@ENV`).
    pub environment: Option<String>,
    /// Its upstream stacks' paths.
    pub depends_on: Vec<String>,
}

impl Store {
    /// Creates or updates a repository's row from the config; returns its id. `max_concurrency`
    /// caps its running runs across instances (`None`: only each instance's `workers` caps).
    pub async fn upsert_repo(
        &self,
        name: &str,
        url: &str,
        branch: &str,
        max_concurrency: Option<usize>,
    ) -> Result<i64> {
        let limit = max_concurrency.map(|n| n as i32);
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO repos (name, url, branch, created_at, max_concurrency) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET url = excluded.url, branch = excluded.branch, \
                 max_concurrency = excluded.max_concurrency RETURNING id",
            )
            .bind(name)
            .bind(url)
            .bind(branch)
            .bind(Utc::now())
            .bind(limit)
            .fetch_one(pool)
            .await?
        }))
    }

    pub async fn repos(&self) -> Result<Vec<RepoRow>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, RepoRow>(
                "SELECT id, name, url, branch, last_fetch_at, last_error, last_error_at FROM repos ORDER BY name",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Records a fetch: `error` is `None` when it worked (which clears an earlier error).
    pub async fn record_fetch(&self, repo_id: i64, error: Option<&str>) -> Result<()> {
        let now = Utc::now();
        on_pool!(self, pool => {
            match error {
                None => sqlx::query("UPDATE repos SET last_fetch_at = $1, last_error = NULL, last_error_at = NULL WHERE id = $2")
                    .bind(now)
                    .bind(repo_id)
                    .execute(pool)
                    .await?
                    .rows_affected(),
                Some(message) => sqlx::query("UPDATE repos SET last_error = $1, last_error_at = $2 WHERE id = $3")
                    .bind(message)
                    .bind(now)
                    .bind(repo_id)
                    .execute(pool)
                    .await?
                    .rows_affected(),
            }
        });
        Ok(())
    }

    /// The last commit of `branch` whose runs were queued: the base of the next diff.
    pub async fn last_processed_commit(
        &self,
        repo_id: i64,
        branch: &str,
    ) -> Result<Option<String>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT sha FROM commits WHERE repo_id = $1 AND branch = $2 AND processed_at IS NOT NULL \
                 ORDER BY processed_at DESC, id DESC LIMIT 1",
            )
            .bind(repo_id)
            .bind(branch)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Replaces the recorded stacks of a repository with those discovered at `commit`;
    /// stacks no longer present are kept, marked removed.
    pub async fn sync_stacks(
        &self,
        repo_id: i64,
        commit: &str,
        stacks: &[StackRecord],
    ) -> Result<()> {
        let now = Utc::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE stacks SET removed = $1, updated_at = $2 WHERE repo_id = $3")
                .bind(true)
                .bind(now)
                .bind(repo_id)
                .execute(&mut *tx)
                .await?;
            for stack in stacks {
                sqlx::query(
                    "INSERT INTO stacks (repo_id, path, name, runner, removed, last_commit, updated_at, \
                     auto_apply, tags, drift_schedule, drift_remediation, environment, depends_on) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (repo_id, path) DO UPDATE SET \
                     name = excluded.name, runner = excluded.runner, removed = excluded.removed, \
                     last_commit = excluded.last_commit, updated_at = excluded.updated_at, \
                     auto_apply = excluded.auto_apply, tags = excluded.tags, \
                     drift_schedule = excluded.drift_schedule, drift_remediation = excluded.drift_remediation, \
                     environment = excluded.environment, depends_on = excluded.depends_on",
                )
                .bind(repo_id)
                .bind(&stack.path)
                .bind(&stack.name)
                .bind(&stack.runner)
                .bind(false)
                .bind(commit)
                .bind(now)
                .bind(stack.auto_apply)
                .bind(serde_json::to_string(&stack.tags)?)
                .bind(&stack.drift_schedule)
                .bind(stack.drift_remediation.as_str())
                .bind(&stack.environment)
                .bind(serde_json::to_string(&stack.depends_on)?)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Stacks recorded for every repository (or one), including removed ones.
    pub async fn stacks(&self, repo: Option<&str>) -> Result<Vec<StackRow>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, StackRow>(
                "SELECT p.name AS repo, s.path, s.name, s.runner, s.removed, s.last_commit, s.updated_at, s.environment \
                 FROM stacks s JOIN repos p ON p.id = s.repo_id WHERE ($1 IS NULL OR p.name = $1) \
                 ORDER BY p.name, s.path",
            )
            .bind(repo)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The runner a stack asked for in its `stack.hcl`, if any.
    pub async fn stack_runner(&self, repo: &str, stack: &str) -> Result<Option<String>> {
        let runner: Option<Option<String>> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT s.runner FROM stacks s JOIN repos p ON p.id = s.repo_id WHERE p.name = $1 AND s.path = $2",
            )
            .bind(repo)
            .bind(stack)
            .fetch_optional(pool)
            .await?
        });
        Ok(runner.flatten())
    }
}

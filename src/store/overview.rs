//! What the dashboard's stack pages read in a few queries, whatever the number of stacks:
//! every live stack with its tags, and each stack's latest run of each kind.

use anyhow::Result;

use super::runs::RUN_COLUMNS;
use super::{Run, Store, on_pool};

/// A live stack as the stacks page lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StackOverview {
    pub repo: String,
    pub path: String,
    pub environment: Option<String>,
    pub last_commit: Option<String>,
    /// JSON array text.
    pub tags: String,
    /// Its upstream stacks' paths, JSON array text.
    pub depends_on: String,
}

impl Store {
    /// Every stack not removed, by repository and path.
    pub async fn stack_overview(&self) -> Result<Vec<StackOverview>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, StackOverview>(
                "SELECT p.name AS repo, s.path, s.environment, s.last_commit, s.tags, s.depends_on \
                 FROM stacks s JOIN repos p ON p.id = s.repo_id WHERE s.removed = $1 \
                 ORDER BY p.name, s.path",
            )
            .bind(false)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Each stack's newest run of each kind (one query; uses the runs' stack index).
    pub async fn latest_runs(&self) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN repos p ON p.id = r.repo_id \
             WHERE r.id IN (SELECT MAX(id) FROM runs WHERE pr_number IS NULL \
             GROUP BY repo_id, stack_path, kind)"
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?
        }))
    }

    /// A stack's newest successful apply.
    pub async fn last_apply(&self, repo: &str, stack: &str) -> Result<Option<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN repos p ON p.id = r.repo_id \
             WHERE p.name = $1 AND r.stack_path = $2 AND r.kind = 'apply' \
             AND r.status = 'succeeded' ORDER BY r.id DESC LIMIT 1"
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql))
                .bind(repo)
                .bind(stack)
                .fetch_optional(pool)
                .await?
        }))
    }
}

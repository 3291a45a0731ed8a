//! Listing runs, newest first, by any mix of filters (the runs page, its JSON twin, `tidemark
//! runs`, a stack's page): only the filters given are in the query, so the planner uses the
//! index they allow.

use anyhow::Result;

use super::runs::RUN_COLUMNS;
use super::{Backend, Run, RunFilter, Store, on_pool};

impl Store {
    /// Runs, newest first, filtered.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        // A prefix of hex digits only: no LIKE wildcard gets through.
        let commit = filter
            .commit
            .as_deref()
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|c| format!("{c}%"));
        if filter.commit.is_some() && commit.is_none() {
            return Ok(Vec::new());
        }
        let limit = if filter.limit > 0 { filter.limit } else { 100 };
        // Only the filters given are in the query, so that the planner can use the index
        // they allow (`($2 IS NULL OR r.stack_path = $2)` would scan every run).
        let mut conditions = Vec::new();
        let mut mark = 1;
        let mut add = |set: bool, condition: &str| {
            if set {
                conditions.push(condition.replace('?', &format!("${mark}")));
                mark += 1;
            }
        };
        add(filter.repo.is_some(), "p.name = ?");
        add(filter.stack.is_some(), "r.stack_path = ?");
        add(filter.status.is_some(), "r.status = ?");
        add(filter.kind.is_some(), "r.kind = ?");
        add(filter.before.is_some(), "r.id < ?");
        add(commit.is_some(), "r.commit_sha LIKE ?");
        add(filter.pr.is_some(), "r.pr_number = ?");
        let filters = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        // A stack's runs are found through the `runs_stack` index (repository, path, id), one
        // seek per repository. SQLite without table statistics would rather walk every run
        // backwards by id for the ORDER BY, so it is told the join order (CROSS JOIN);
        // PostgreSQL plans it from its statistics.
        let from = match (&self.backend, &filter.stack) {
            (Backend::Sqlite(_), Some(_)) => "repos p CROSS JOIN runs r ON p.id = r.repo_id",
            _ => "runs r JOIN repos p ON p.id = r.repo_id",
        };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM {from} {filters} \
             ORDER BY r.id DESC LIMIT {limit}"
        );
        Ok(on_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql));
            if let Some(repo) = &filter.repo {
                query = query.bind(repo);
            }
            if let Some(stack) = &filter.stack {
                query = query.bind(stack);
            }
            if let Some(status) = filter.status {
                query = query.bind(status.as_str());
            }
            if let Some(kind) = filter.kind {
                query = query.bind(kind.as_str());
            }
            if let Some(before) = filter.before {
                query = query.bind(before);
            }
            if let Some(commit) = &commit {
                query = query.bind(commit);
            }
            if let Some(pr) = filter.pr {
                query = query.bind(pr);
            }
            query.fetch_all(pool).await?
        }))
    }
}

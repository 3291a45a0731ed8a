//! What the dashboard's stack pages read, whatever the number of stacks, the length of
//! their history and the size of their plans: every stack's state badge, worked out in the
//! query from its latest branch plan and apply (each found by one index seek), its drift
//! state and its locks, so that a list of 10,000 stacks reads two short columns a stack; the
//! shown page's rows in full; one stack with the stacks that depend on it.

use anyhow::Result;

use chrono::{DateTime, Utc};

use super::runs::RUN_COLUMNS;
use super::{Backend, Run, RunStatus, StackRow, Store, on_pool};

/// A live stack as its page shows it.
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

/// A stack with its latest branch plan and apply, its drift state and its badge: what its
/// row on the stacks page shows.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct StackState {
    #[serde(skip)]
    pub id: i64,
    /// The stack as discovered (serialised in place: the list's fields before it had states).
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub stack: StackRow,
    /// JSON array text.
    #[serde(skip)]
    pub tags: String,
    #[serde(skip)]
    pub plan_id: Option<i64>,
    #[serde(skip)]
    #[sqlx(try_from = "Option<String>")]
    pub plan_status: OptionalStatus,
    /// The latest plan's number of resource changes.
    #[serde(skip)]
    pub plan_changes: Option<i64>,
    #[serde(skip)]
    pub apply_id: Option<i64>,
    #[serde(skip)]
    #[sqlx(try_from = "Option<String>")]
    pub apply_status: OptionalStatus,
    #[serde(skip)]
    pub apply_plan_run_id: Option<i64>,
    #[serde(skip)]
    pub apply_commit: Option<String>,
    #[serde(skip)]
    pub apply_finished_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub drift_state: Option<String>,
    #[serde(skip)]
    pub drift_since: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub drift_checked_at: Option<DateTime<Utc>>,
    /// Its badge: `failed`, `drifted`, `changes_pending`, `locked` or `in_sync` (see
    /// [`STATE`]).
    pub state: String,
}

/// A stack's id and badge, in list order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StackBadge {
    pub id: i64,
    pub state: String,
}

/// What the stacks list keeps (each filter off when `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StackFilter<'a> {
    pub repo: Option<&'a str>,
    /// A part of the stack's path (case-sensitive).
    pub search: Option<&'a str>,
    pub tag: Option<&'a str>,
    /// Removed stacks too.
    pub removed: bool,
}

/// A run status that may be absent (a stack that never ran a kind of run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptionalStatus(pub Option<RunStatus>);

impl TryFrom<Option<String>> for OptionalStatus {
    type Error = String;
    fn try_from(value: Option<String>) -> std::result::Result<Self, String> {
        value
            .map(RunStatus::try_from)
            .transpose()
            .map(OptionalStatus)
    }
}

/// A stack's latest branch plan (`lp`) and apply (`la`), each found by one seek of the
/// `runs_latest` index, and its drift state (`d`). SQLite seeks with a correlated `MAX(id)`;
/// PostgreSQL would hash every run for that, so it gets a `LATERAL` seek instead.
fn from(backend: &Backend) -> &'static str {
    match backend {
        Backend::Sqlite(_) => {
            "FROM stacks s JOIN repos p ON p.id = s.repo_id \
             LEFT JOIN runs lp ON lp.id = (SELECT MAX(id) FROM runs WHERE repo_id = s.repo_id \
                 AND stack_path = s.path AND kind = 'plan' AND pr_number IS NULL) \
             LEFT JOIN runs la ON la.id = (SELECT MAX(id) FROM runs WHERE repo_id = s.repo_id \
                 AND stack_path = s.path AND kind = 'apply' AND pr_number IS NULL) \
             LEFT JOIN drift_states d ON d.repo_id = s.repo_id AND d.stack_path = s.path"
        }
        Backend::Postgres(_) => {
            "FROM stacks s JOIN repos p ON p.id = s.repo_id \
             LEFT JOIN LATERAL (SELECT id, status, changes, plan_run_id, commit_sha, finished_at \
                 FROM runs WHERE repo_id = s.repo_id AND stack_path = s.path AND kind = 'plan' \
                 AND pr_number IS NULL ORDER BY id DESC LIMIT 1) lp ON TRUE \
             LEFT JOIN LATERAL (SELECT id, status, changes, plan_run_id, commit_sha, finished_at \
                 FROM runs WHERE repo_id = s.repo_id AND stack_path = s.path AND kind = 'apply' \
                 AND pr_number IS NULL ORDER BY id DESC LIMIT 1) la ON TRUE \
             LEFT JOIN drift_states d ON d.repo_id = s.repo_id AND d.stack_path = s.path"
        }
    }
}

/// A stack's badge, the worst that holds of: its latest plan or apply failed (or timed out,
/// or was interrupted) or its drift check erred; it drifted; its latest plan succeeded with
/// changes that no succeeded apply of that plan carried; a running run or an explicit lock
/// holds it; else in sync.
const STATE: &str = "CASE \
     WHEN lp.status IN ('failed', 'timed_out', 'interrupted') \
       OR la.status IN ('failed', 'timed_out', 'interrupted') OR d.state = 'error' THEN 'failed' \
     WHEN d.state = 'drifted' THEN 'drifted' \
     WHEN lp.status = 'succeeded' AND lp.changes > 0 \
       AND NOT COALESCE(la.plan_run_id = lp.id AND la.status = 'succeeded', FALSE) \
       THEN 'changes_pending' \
     WHEN EXISTS (SELECT 1 FROM stack_locks l WHERE l.repo_id = s.repo_id AND l.stack_path = s.path) \
       OR EXISTS (SELECT 1 FROM runs x WHERE x.repo_id = s.repo_id AND x.stack_path = s.path \
                  AND x.status = 'running') THEN 'locked' \
     ELSE 'in_sync' END";

/// Everything a stack's row shows.
const COLUMNS: &str = "s.id, p.name AS repo, s.path, s.name, s.runner, s.removed, \
     s.last_commit, s.updated_at, s.environment, s.tags, \
     lp.id AS plan_id, lp.status AS plan_status, lp.changes AS plan_changes, \
     la.id AS apply_id, la.status AS apply_status, la.plan_run_id AS apply_plan_run_id, \
     la.commit_sha AS apply_commit, la.finished_at AS apply_finished_at, \
     d.state AS drift_state, d.since AS drift_since, d.checked_at AS drift_checked_at";

/// A summary's number of resource changes (add + change + destroy + replace), kept in its
/// own column so that listing every stack's state reads no summary.
pub(super) fn change_count(summary: &serde_json::Value) -> Option<i64> {
    let counts = summary.get("summary")?.as_object()?;
    Some(
        ["add", "change", "destroy", "replace"]
            .iter()
            .filter_map(|k| counts.get(*k).and_then(serde_json::Value::as_i64))
            .sum(),
    )
}

impl Store {
    /// A stack not removed, and the stacks of its repository whose `depends_on` may name it
    /// (those whose list holds its path as text; every stack of the repository when the path
    /// is one JSON escapes). The caller parses the lists to be sure.
    pub async fn stack_and_dependents(
        &self,
        repo: &str,
        path: &str,
    ) -> Result<Option<(StackOverview, Vec<StackOverview>)>> {
        let escaped = path
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control());
        let pattern = if escaped {
            "%".to_string()
        } else {
            let mut like = String::from("%\"");
            for c in path.chars() {
                if matches!(c, '%' | '_' | '!') {
                    like.push('!');
                }
                like.push(c);
            }
            like + "\"%"
        };
        let rows: Vec<StackOverview> = on_pool!(self, pool => {
            sqlx::query_as::<_, StackOverview>(
                "SELECT p.name AS repo, s.path, s.environment, s.last_commit, s.tags, s.depends_on \
                 FROM stacks s JOIN repos p ON p.id = s.repo_id \
                 WHERE p.name = $1 AND s.removed = $2 AND (s.path = $3 OR s.depends_on LIKE $4 ESCAPE '!') \
                 ORDER BY s.path",
            )
            .bind(repo)
            .bind(false)
            .bind(path)
            .bind(pattern)
            .fetch_all(pool)
            .await?
        });
        let (this, others): (Vec<_>, Vec<_>) = rows.into_iter().partition(|s| s.path == path);
        Ok(this.into_iter().next().map(|stack| (stack, others)))
    }

    /// Every stack the filter keeps, by repository and path, with its badge: one query
    /// that returns two short columns a stack.
    pub async fn stack_badges(&self, filter: &StackFilter<'_>) -> Result<Vec<StackBadge>> {
        let contains = match self.backend {
            Backend::Sqlite(_) => "instr",
            Backend::Postgres(_) => "strpos",
        };
        // A tag list is JSON text written by serde_json: the tag as it writes it, quotes
        // included, is a part of the text of every list that holds it.
        let tag = filter.tag.map(|t| serde_json::Value::from(t).to_string());
        let from = from(&self.backend);
        let sql = format!(
            "SELECT s.id, {STATE} AS state {from} \
             WHERE ($1 OR s.removed = $2) AND ($3 IS NULL OR p.name = $3) \
             AND ($4 IS NULL OR {contains}(s.path, $4) > 0) \
             AND ($5 IS NULL OR {contains}(s.tags, $5) > 0) ORDER BY p.name, s.path"
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, StackBadge>(sqlx::AssertSqlSafe(sql))
                .bind(filter.removed)
                .bind(false)
                .bind(filter.repo)
                .bind(filter.search)
                .bind(tag.as_deref())
                .fetch_all(pool)
                .await?
        }))
    }

    /// How many live stacks have each badge (badges no stack has are absent).
    pub async fn stack_state_counts(&self) -> Result<Vec<(String, i64)>> {
        let from = from(&self.backend);
        let sql = format!(
            "SELECT state, COUNT(*) FROM (SELECT {STATE} AS state {from} WHERE s.removed = $1) b \
             GROUP BY state ORDER BY state"
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(false)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The rows of the stacks with these ids, in the order given.
    pub async fn stack_rows(&self, ids: &[i64]) -> Result<Vec<StackState>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let from = from(&self.backend);
        let sql = format!(
            "SELECT {COLUMNS}, {STATE} AS state {from} WHERE s.id IN ({})",
            marks.join(", ")
        );
        let mut rows: Vec<StackState> = on_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, StackState>(sqlx::AssertSqlSafe(sql));
            for id in ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await?
        });
        let order: std::collections::HashMap<i64, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        rows.sort_by_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
        Ok(rows)
    }

    /// One stack's row, removed or not.
    pub async fn stack_state(&self, repo: &str, path: &str) -> Result<Option<StackState>> {
        let from = from(&self.backend);
        let sql =
            format!("SELECT {COLUMNS}, {STATE} AS state {from} WHERE p.name = $1 AND s.path = $2");
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, StackState>(sqlx::AssertSqlSafe(sql))
                .bind(repo)
                .bind(path)
                .fetch_optional(pool)
                .await?
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

//! What the dashboard's stack pages read, in one query each whatever the number of stacks
//! and the length of their history: every stack with what its state badge is worked out
//! from, and one stack with the stacks that depend on it.

use anyhow::Result;

use chrono::{DateTime, Utc};

use super::runs::RUN_COLUMNS;
use super::{Run, RunStatus, Store, on_pool};

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

/// A stack with its latest branch plan and apply, its drift state and whether it is held,
/// narrowed to what its state badge and its row on the stacks page show.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct StackState {
    pub repo: String,
    pub path: String,
    pub name: String,
    pub runner: Option<String>,
    pub removed: bool,
    pub last_commit: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub environment: Option<String>,
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
    /// A running run or an explicit lock holds it.
    #[serde(skip)]
    pub locked: bool,
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

const STACK_STATES: &str = "SELECT p.name AS repo, s.path, s.name, s.runner, s.removed, s.last_commit, \
     s.updated_at, s.environment, s.tags, \
     lp.id AS plan_id, lp.status AS plan_status, lp.changes AS plan_changes, \
     la.id AS apply_id, la.status AS apply_status, la.plan_run_id AS apply_plan_run_id, \
     la.commit_sha AS apply_commit, la.finished_at AS apply_finished_at, \
     d.state AS drift_state, d.since AS drift_since, d.checked_at AS drift_checked_at, \
     (EXISTS (SELECT 1 FROM stack_locks l WHERE l.repo_id = s.repo_id AND l.stack_path = s.path) \
      OR EXISTS (SELECT 1 FROM runs x WHERE x.repo_id = s.repo_id AND x.stack_path = s.path \
                 AND x.status = 'running')) AS locked \
     FROM stacks s JOIN repos p ON p.id = s.repo_id \
     LEFT JOIN runs lp ON lp.id = (SELECT MAX(id) FROM runs WHERE repo_id = s.repo_id \
         AND stack_path = s.path AND kind = 'plan' AND pr_number IS NULL) \
     LEFT JOIN runs la ON la.id = (SELECT MAX(id) FROM runs WHERE repo_id = s.repo_id \
         AND stack_path = s.path AND kind = 'apply' AND pr_number IS NULL) \
     LEFT JOIN drift_states d ON d.repo_id = s.repo_id AND d.stack_path = s.path \
     WHERE $1 OR s.removed = $2 ORDER BY p.name, s.path";

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

    /// Every stack (and the removed ones too with `removed`), by repository and path, with
    /// what its state badge is worked out from. One query that seeks each stack's latest
    /// runs through an index: its cost follows the number of stacks, not the length of the
    /// history or the size of the plans.
    pub async fn stack_states(&self, removed: bool) -> Result<Vec<StackState>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, StackState>(STACK_STATES)
                .bind(removed)
                .bind(false)
                .fetch_all(pool)
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

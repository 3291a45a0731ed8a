//! The records the store reads and writes: runs, logs, artifacts (a run's kind and status
//! are [`crate::run`]'s).

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::run::{RunKind, RunStatus};

/// The resource counts of a plan, as the run list shows them. A replacement counts under
/// `replace` only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChangeSummary {
    pub add: u32,
    pub change: u32,
    pub destroy: u32,
    #[serde(default)]
    pub replace: u32,
}

/// A run as stored, with its repository's name.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Run {
    pub id: i64,
    pub repo: String,
    pub stack: String,
    pub commit: String,
    #[sqlx(try_from = "String")]
    pub kind: RunKind,
    #[sqlx(try_from = "String")]
    pub status: RunStatus,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The plan summary as JSON text (the runner's full summary; see `summary()`).
    #[serde(skip)]
    pub summary_json: Option<String>,
    pub worker: Option<String>,
    pub attempt: i32,
    /// For an apply: the plan run whose stored plan it applies.
    pub plan_run_id: Option<i64>,
    /// See [`NewRun::transitive`].
    pub transitive: bool,
    /// The apply gate's last decision about this run (JSON), for a plan the engine tried to
    /// apply and for every apply.
    #[serde(skip)]
    pub gate_json: Option<String>,
    /// The pull request this run was queued for (a speculative plan, or an apply on merge).
    pub pr_number: Option<i64>,
    /// For a plan queued because a merge changed the stack's inputs since its review: the
    /// reviewed plan run, whose change set this plan must repeat to be applied.
    pub reviewed_run_id: Option<i64>,
}

impl Run {
    /// The run's full plan summary, if it produced one.
    pub fn summary_value(&self) -> Option<serde_json::Value> {
        self.summary_json
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
    }

    /// Add, change, destroy and replace counts, if the run produced a plan (the runner's
    /// summary keeps them under `summary`).
    pub fn change_summary(&self) -> Option<ChangeSummary> {
        let value = self.summary_value()?;
        serde_json::from_value(value.get("summary")?.clone()).ok()
    }
}

/// A run to enqueue.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub repo_id: i64,
    pub stack: String,
    pub commit: String,
    pub kind: RunKind,
    /// Why it was queued (the affected-set reasons, or who asked), for people.
    pub reason: Option<String>,
    /// Runs (of the same batch) that must finish first.
    pub after: Vec<i64>,
    /// For an apply: the plan run whose stored plan it applies. In a [`CommitBatch`], an
    /// index into its runs, like `after`.
    pub plan_run: Option<i64>,
    /// Queued only because an upstream stack changed (no file of its own did): when every
    /// upstream run it waits for is an apply that changed no output, it is skipped.
    pub transitive: bool,
    /// See [`Run::pr_number`]: a pull request's runs supersede only that pull request's.
    pub pr_number: Option<i64>,
    /// See [`Run::reviewed_run_id`].
    pub reviewed_run: Option<i64>,
}

/// A new head commit and the runs it queues: see `Store::queue_commit`.
#[derive(Debug, Clone)]
pub struct CommitBatch<'a> {
    pub repo_id: i64,
    pub branch: &'a str,
    pub info: &'a crate::repo::CommitInfo,
    pub parent: Option<&'a str>,
    /// Why the commit could not be planned in full (a dependency cycle), if so.
    pub error: Option<&'a str>,
    /// The runs, in dependency order; `after` holds indexes into this list.
    pub runs: Vec<NewRun>,
    /// Runs (by index) to record as failed at once, with the reason.
    pub failed: Vec<(usize, String)>,
}

/// A stack that nothing may run on: a running run holds it, or an explicit lock (an
/// interrupted apply) does until an operator unlocks it.
#[derive(Debug, Clone, Serialize)]
pub struct StackLock {
    pub repo: String,
    pub stack: String,
    /// `run` while a run holds it; `interrupted_apply` (or another reason) for explicit locks.
    pub kind: String,
    pub run_id: Option<i64>,
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// How a run ended, as the worker reports it.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The runner's plan summary as JSON (`{"summary": {"add", ...}, "resources", ...}`).
    pub summary: Option<serde_json::Value>,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LogEntry {
    pub step: String,
    pub stream: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
}

/// A stored plan: the encrypted binary plan and the redacted plan JSON, both compressed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredArtifact {
    pub run_id: i64,
    pub digest: String,
    pub binding: String,
    pub plan_encrypted: Vec<u8>,
    pub plan_json: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// The stack's state serial and lineage when the plan was made, when known.
    pub state_serial: Option<i64>,
    pub state_lineage: Option<String>,
}

/// A tracked repository's row, with its fetch health.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RepoRow {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub branch: String,
    pub last_fetch_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// A stack as last discovered.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StackRow {
    pub repo: String,
    pub path: String,
    pub name: String,
    pub runner: Option<String>,
    pub removed: bool,
    pub last_commit: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The environment of an instance (`path` is then `DIR@ENV`); `None` for a stack without
    /// environments.
    pub environment: Option<String>,
}

/// Filters for listing runs; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub repo: Option<String>,
    pub stack: Option<String>,
    pub status: Option<RunStatus>,
    pub kind: Option<RunKind>,
    pub limit: i64,
    /// Only runs with a smaller id: the cursor of the next page (the last id of this one).
    pub before: Option<i64>,
    /// Only runs of commits starting with this (a full or abbreviated sha).
    pub commit: Option<String>,
    /// Only runs of this pull request.
    pub pr: Option<i64>,
}

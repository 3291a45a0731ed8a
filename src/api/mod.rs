//! HTTP: health, the REST API over runs, stacks and repositories, poll nudges, and a small
//! dashboard. Only this module knows HTTP types.

mod access;
mod error;
mod gate;
mod metrics;
mod pages;
mod serve;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::store::{Run, RunFilter, Store};
pub use access::{Access, Principal, Token, User};
pub use error::ApiError;
pub use serve::{Timeouts, serve};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Each repository's poll nudge, by name.
    pub nudges: Arc<HashMap<String, Arc<Notify>>>,
    /// The tracked repositories, to match webhook payloads against.
    pub repos: Arc<Vec<crate::config::RepoConfig>>,
    /// The webhook secret (from the environment variable the config names), if any.
    pub webhook_secret: Option<String>,
    /// Woken when a request queues a run.
    pub work: Arc<Notify>,
    /// Encrypts state files at rest (the state backend under `/state/`).
    pub key: crate::crypto::PlanKey,
    /// Who may read and act (tokens and their roles).
    pub access: Arc<Access>,
    /// Each forge repository's pull-request task, by `owner/name` in lower case.
    pub pulls: Arc<HashMap<String, Arc<crate::engine::PullRequests>>>,
    /// `/metrics` shows the state of at most this many stacks, one series each (0: none).
    pub metrics_per_stack: usize,
}

/// The largest body an API call or a dashboard form may send (each is a few fields); larger
/// ones get 413 before a handler runs.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The largest webhook delivery: GitHub caps payloads at 25 MB.
pub const MAX_WEBHOOK_BYTES: usize = 25 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let states = crate::state_backend::routes(crate::state_backend::StateApi {
        store: state.store.clone(),
        key: state.key.clone(),
        only: None,
    });
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/dora", get(metrics::dora))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/logs", get(run_logs))
        .route("/api/v1/runs/{id}/verdict", get(gate::verdict))
        .route("/api/v1/runs/{id}/mark-failed", post(metrics::mark_failed))
        .route("/api/v1/runs/{id}/{action}", post(gate::act))
        .route("/api/v1/stacks", get(pages::stacks_api))
        .route("/api/v1/repos", get(list_repos))
        .route("/api/v1/repos/{name}/poll", post(poll_repo))
        .route("/api/v1/locks", get(list_locks))
        .route(
            "/api/v1/freeze",
            get(gate::frozen).post(gate::freeze).delete(gate::thaw),
        )
        .route("/api/v1/drift", get(list_drift))
        .route("/api/v1/prs", get(list_prs))
        .route("/api/v1/prs/{repo}/{number}", get(get_pr))
        .route("/api/v1/audit", get(access::audit))
        .route(
            "/webhooks/github",
            post(webhook::github).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
        )
        .merge(pages::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.clone())
        .merge(states)
        .layer(axum::middleware::from_fn_with_state(state, access::guard))
        .layer(axum::middleware::from_fn(metrics::track))
}

/// The query string of `GET /api/v1/prs`.
#[derive(Debug, Deserialize)]
pub struct PrsQuery {
    pub repo: Option<String>,
}

async fn list_prs(
    State(state): State<AppState>,
    Query(query): Query<PrsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let prs = crate::engine::pr_views(&state.store, query.repo.as_deref(), None).await?;
    Ok(Json(serde_json::json!({ "prs": prs })))
}

async fn get_pr(
    State(state): State<AppState>,
    Path((repo, number)): Path<(String, i64)>,
) -> Result<Json<crate::engine::PrView>, ApiError> {
    crate::engine::pr_views(&state.store, Some(&repo), Some(number))
        .await?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("pull request is not followed"))
}

/// `GET /healthz`: 200 `ok` while the database answers; 503 `degraded`, with the error,
/// while it does not (the service keeps running and recovers by itself).
async fn health(
    State(state): State<AppState>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    let database = state.store.backend_name();
    match state.store.repos().await {
        Ok(_) => (
            axum::http::StatusCode::OK,
            Json(serde_json::json!({ "status": "ok", "database": database })),
        ),
        Err(err) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "degraded", "database": database, "error": format!("{err:#}"),
            })),
        ),
    }
}

/// The query string of `GET /api/v1/runs`.
#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    pub repo: Option<String>,
    pub stack: Option<String>,
    pub status: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<i64>,
    /// The cursor from the previous page's `next`.
    pub before: Option<i64>,
    /// A commit sha or its prefix.
    pub commit: Option<String>,
    pub pr: Option<i64>,
}

impl RunsQuery {
    fn filter(self) -> Result<RunFilter, ApiError> {
        Ok(RunFilter {
            repo: self.repo,
            stack: self.stack,
            status: self
                .status
                .map(|s| s.parse())
                .transpose()
                .map_err(ApiError::BadRequest)?,
            kind: self
                .kind
                .map(|s| s.parse())
                .transpose()
                .map_err(ApiError::BadRequest)?,
            limit: self.limit.unwrap_or(100).clamp(1, 1000),
            before: self.before,
            commit: self.commit,
            pr: self.pr,
        })
    }
}

/// A run as the API and `tidemark runs --format json` show it.
#[derive(Debug, Serialize)]
pub struct RunView {
    pub id: i64,
    pub repo: String,
    pub stack: String,
    pub commit: String,
    pub kind: String,
    pub status: String,
    pub reason: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub attempt: i32,
    /// Resources to add, change, destroy and replace, when the run produced a plan.
    pub summary: Option<crate::store::ChangeSummary>,
    /// The resources and outputs that change (addresses and actions), when known.
    pub resources: Option<serde_json::Value>,
    pub outputs: Option<serde_json::Value>,
    /// For an apply: the plan run it applies.
    pub plan_run_id: Option<i64>,
    /// The apply gate's last decision about the run, if it was asked.
    pub gate: Option<serde_json::Value>,
}

impl From<Run> for RunView {
    fn from(run: Run) -> Self {
        let summary = run.change_summary();
        let full = run.summary_value();
        let field = |name: &str| full.as_ref().and_then(|v| v.get(name)).cloned();
        let (resources, outputs) = (field("resources"), field("outputs"));
        let gate = run
            .gate_json
            .as_deref()
            .and_then(|g| serde_json::from_str(g).ok());
        RunView {
            id: run.id,
            repo: run.repo,
            stack: run.stack,
            commit: run.commit,
            kind: run.kind.to_string(),
            status: run.status.to_string(),
            reason: run.reason,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            exit_code: run.exit_code,
            error: run.error,
            attempt: run.attempt,
            summary,
            resources,
            outputs,
            plan_run_id: run.plan_run_id,
            gate,
        }
    }
}

async fn list_runs(
    State(state): State<AppState>,
    Query(query): Query<RunsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = query.filter()?;
    let runs = state.store.runs(&filter).await?;
    // A full page may have more after it: `next` is the cursor (`?before=`) of the next page.
    let next = (runs.len() as i64 == filter.limit)
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    let runs: Vec<RunView> = runs.into_iter().map(RunView::from).collect();
    Ok(Json(serde_json::json!({ "runs": runs, "next": next })))
}

async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<RunView>, ApiError> {
    let run = state
        .store
        .find_run(id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    Ok(Json(run.into()))
}

async fn run_logs(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .store
        .find_run(id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let logs = state.store.logs(id).await?;
    Ok(Json(serde_json::json!({ "run": id, "logs": logs })))
}

async fn list_repos(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let repos = state.store.repos().await?;
    Ok(Json(serde_json::json!({ "repos": repos })))
}

async fn list_drift(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let drift = state.store.drift_statuses().await?;
    Ok(Json(serde_json::json!({ "drift": drift })))
}

async fn list_locks(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let locks = state.store.locks().await?;
    Ok(Json(serde_json::json!({ "locks": locks })))
}

async fn poll_repo(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let nudge = state.nudges.get(&name).ok_or(ApiError::NotFound("repo"))?;
    nudge.notify_one();
    Ok(Json(
        serde_json::json!({ "repo": name, "poll": "requested" }),
    ))
}

//! `GET /metrics` (the Prometheus text format) and `GET /api/v1/dora`. Counters and histograms
//! are this instance's own (they sum across instances); gauges are read from the shared
//! database at each scrape, so every instance reports the same ones (take their `max`).

use axum::Json;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::delivery::Dora;
use crate::store::HistoryFilter;
use crate::telemetry;

/// Counts every request by its route template (never its raw path: no series per run id).
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    telemetry::http_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.access.may_scrape(&headers) {
        return Err(ApiError::Unauthorized(
            "GET /metrics needs the bearer token metrics_token_env names",
        ));
    }
    let gauges = state.store.gauges().await?;
    // Only the repositories the config tracks: one it no longer names keeps its rows in the
    // database, not its series.
    let tracked = |name: &str| state.repos.iter().any(|r| r.name == name);
    let repos = state.store.repos().await?;
    let badges = state.store.stack_state_counts().await?;
    let now = Utc::now();
    let age = |at: Option<DateTime<Utc>>| {
        at.map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1000.0
        })
    };
    use telemetry::set_gauge;
    for kind in ["plan", "apply", "drift"] {
        let count = |rows: &[(String, i64)]| {
            rows.iter()
                .find(|(k, _)| k == kind)
                .map_or(0.0, |(_, n)| *n as f64)
        };
        set_gauge(
            "tidemark_queue_depth",
            Some(("kind", kind.into())),
            count(&gauges.queued),
        );
        set_gauge(
            "tidemark_runs_running",
            Some(("kind", kind.into())),
            count(&gauges.running),
        );
    }
    set_gauge(
        "tidemark_queue_oldest_age_seconds",
        None,
        age(gauges.oldest_queued),
    );
    for (repo, count) in gauges.stacks.iter().filter(|(repo, _)| tracked(repo)) {
        set_gauge(
            "tidemark_stacks",
            Some(("repo", repo.clone())),
            *count as f64,
        );
    }
    for state_name in ["in_sync", "drifted", "error"] {
        let count = gauges
            .drift
            .iter()
            .find(|(s, _)| s == state_name)
            .map_or(0.0, |(_, n)| *n as f64);
        set_gauge(
            "tidemark_stacks_by_drift_state",
            Some(("state", state_name.into())),
            count,
        );
    }
    set_gauge("tidemark_stacks_locked", None, gauges.locks as f64);
    set_gauge(
        "tidemark_drift_oldest_check_age_seconds",
        None,
        age(gauges.oldest_drift_check),
    );
    set_gauge(
        "tidemark_outbox_backlog",
        None,
        gauges.outbox_pending as f64,
    );
    set_gauge(
        "tidemark_outbox_oldest_age_seconds",
        None,
        age(gauges.outbox_oldest),
    );
    for state_name in ["failed", "drifted", "changes_pending", "locked", "in_sync"] {
        let count = badges
            .iter()
            .find(|(s, _)| s == state_name)
            .map_or(0.0, |(_, n)| *n as f64);
        set_gauge(
            "tidemark_stacks_by_state",
            Some(("state", state_name.into())),
            count,
        );
    }
    for repo in repos.into_iter().filter(|r| tracked(&r.name)) {
        if let Some(at) = repo.last_fetch_at {
            set_gauge(
                "tidemark_repo_last_fetch_timestamp_seconds",
                Some(("repo", repo.name.clone())),
                at.timestamp_millis() as f64 / 1000.0,
            );
        }
        set_gauge(
            "tidemark_repo_fetch_failing",
            Some(("repo", repo.name)),
            f64::from(u8::from(repo.last_error.is_some())),
        );
    }
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render() + &per_stack(&state, now).await?,
    )
        .into_response())
}

/// With `metrics_per_stack = N`: the state of the first N stacks (by repository and path) as
/// `tidemark_stack_state{repo, stack, state} 1`, the drifted ones' drift age, and how many
/// stacks the cap left out. Written from the database at each scrape, so a stack that changes
/// state or goes away leaves no stale series behind.
async fn per_stack(state: &AppState, now: DateTime<Utc>) -> Result<String, ApiError> {
    use std::fmt::Write;
    let cap = state.metrics_per_stack;
    if cap == 0 {
        return Ok(String::new());
    }
    let badges = state
        .store
        .stack_badges(&crate::store::StackFilter::default())
        .await?;
    let ids: Vec<i64> = badges.iter().take(cap).map(|b| b.id).collect();
    let rows = state.store.stack_rows(&ids).await?;
    let mut out = String::from(
        "# HELP tidemark_stack_state A stack's badge on the stacks page (metrics_per_stack)\n\
         # TYPE tidemark_stack_state gauge\n",
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "tidemark_stack_state{{repo=\"{}\",stack=\"{}\",state=\"{}\"}} 1",
            label(&row.stack.repo),
            label(&row.stack.path),
            label(&row.state)
        );
    }
    out.push_str(
        "# HELP tidemark_stack_drift_age_seconds How long a drifted stack has been drifted (metrics_per_stack)\n\
         # TYPE tidemark_stack_drift_age_seconds gauge\n",
    );
    for row in &rows {
        if let (Some("drifted"), Some(since)) = (row.drift_state.as_deref(), row.drift_since) {
            let _ = writeln!(
                out,
                "tidemark_stack_drift_age_seconds{{repo=\"{}\",stack=\"{}\"}} {}",
                label(&row.stack.repo),
                label(&row.stack.path),
                (now - since).num_milliseconds().max(0) as f64 / 1000.0
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP tidemark_stack_series_dropped Stacks left out of the per-stack series by metrics_per_stack\n\
         # TYPE tidemark_stack_series_dropped gauge\ntidemark_stack_series_dropped {}",
        badges.len().saturating_sub(cap)
    );
    Ok(out)
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The query string of `GET /api/v1/dora`.
#[derive(Debug, Deserialize)]
pub struct DoraQuery {
    repo: Option<String>,
    /// A stack path or directory (all of its environments).
    stack: Option<String>,
    /// How far back the window reaches, such as `30d` (the default) or `12h`.
    since: Option<String>,
    /// A revert applied within this long of a deployment marks it failed (default `24h`).
    revert_window: Option<String>,
}

/// `GET /api/v1/dora?repo=R&stack=S&since=30d`: the delivery metrics of a window ending now.
pub async fn dora(
    State(state): State<AppState>,
    Query(query): Query<DoraQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let since = window(query.since.as_deref(), "since", "30d")?;
    let revert = window(query.revert_window.as_deref(), "revert_window", "24h")?;
    let filter = HistoryFilter {
        repo: query.repo.clone(),
        stack: query.stack.clone(),
    };
    let now = Utc::now();
    let dora: Dora = state.store.dora(&filter, now - since, now, revert).await?;
    let mut value = serde_json::to_value(&dora).map_err(anyhow::Error::from)?;
    value["repo"] = serde_json::json!(query.repo);
    value["stack"] = serde_json::json!(query.stack);
    Ok(Json(value))
}

/// A duration such as `30d`, `12h` or `2w`, at most ten years.
fn window(text: Option<&str>, what: &str, default: &str) -> Result<TimeDelta, ApiError> {
    let text = text.unwrap_or(default);
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| TimeDelta::from_std(d).ok())
        .filter(|d| *d > TimeDelta::zero() && *d <= TimeDelta::days(3650))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{what}: {text:?} is not a duration such as 30d, 12h or 2w (at most ten years)"
            ))
        })
}

/// The body of `POST /api/v1/runs/{id}/mark-failed`.
#[derive(Debug, Deserialize)]
pub struct MarkFailed {
    reason: String,
}

/// `POST /api/v1/runs/{id}/mark-failed`: an operator says a successful apply broke what it
/// deployed; the delivery metrics count it as a failure (the access log records who said so).
pub async fn mark_failed(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<i64>,
    Json(body): Json<MarkFailed>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::BadRequest(
            "marking an apply failed needs a reason".into(),
        ));
    }
    if !state.store.mark_failed(id, reason).await? {
        return Err(ApiError::Conflict(format!(
            "run {id} is not a succeeded apply: only a deployment can be marked failed"
        )));
    }
    Ok(Json(
        serde_json::json!({ "run": id, "marked_failed": reason }),
    ))
}

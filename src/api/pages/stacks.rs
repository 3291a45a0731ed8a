//! The stack pages: every stack with one worst-of state badge (failed, drifted, changes
//! pending, locked, in sync) and filters; one stack's applies, runs, drift timeline, state
//! versions and lock, with lock and unlock forms; the drift and locks lists; delivery metrics.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use chrono::{TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{form_principal, viewer};
use super::{render, since, took, url_encode, when};
use crate::api::{ApiError, AppState, Principal};
use crate::store::{DriftStatus, HistoryFilter, Run, RunKind, RunStatus};

type Who = Option<axum::Extension<Principal>>;

/// The states, worst first, with their labels and bar colours.
const STATES: [(&str, &str, &str); 5] = [
    ("failed", "failed", "#d92d20"),
    ("drifted", "drifted", "#f79009"),
    ("changes_pending", "changes pending", "#fdb022"),
    ("locked", "locked", "#7a5af8"),
    ("in_sync", "in sync", "#17b26a"),
];

fn label(state: &str) -> &'static str {
    STATES.iter().find(|s| s.0 == state).map_or("", |s| s.1)
}

#[derive(Debug, Default, Deserialize)]
pub struct StacksQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    offset: usize,
    /// The API's page size (the page shows [`PAGE`]).
    limit: Option<usize>,
    /// The API also lists removed stacks.
    #[serde(default)]
    removed: bool,
}

impl StacksQuery {
    /// The query string of the same filters at another offset.
    fn at(&self, offset: usize) -> String {
        format!(
            "q={}&repo={}&tag={}&state={}&offset={offset}",
            url_encode(&self.q),
            url_encode(&self.repo),
            url_encode(&self.tag),
            url_encode(&self.state),
        )
    }
}

const PAGE: usize = 200;
/// The most stacks one API page holds.
const MAX_LIMIT: usize = 1000;

/// One page of the stacks list: its rows, every state's count under the filters (the count
/// bar), and how many stacks the filters keep.
struct StacksView {
    rows: Vec<Value>,
    counts: Vec<Value>,
    total: usize,
}

async fn stacks_view(
    store: &crate::store::Store,
    query: &StacksQuery,
    limit: usize,
) -> Result<StacksView, ApiError> {
    let given = |text: &str| (!text.trim().is_empty()).then(|| text.trim().to_string());
    let (repo, search, tag) = (given(&query.repo), given(&query.q), given(&query.tag));
    let badges = store
        .stack_badges(&crate::store::StackFilter {
            repo: repo.as_deref(),
            search: search.as_deref(),
            tag: tag.as_deref(),
            removed: query.removed,
        })
        .await?;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for badge in &badges {
        *counts.entry(badge.state.as_str()).or_default() += 1;
    }
    let kept: Vec<i64> = badges
        .iter()
        .filter(|b| query.state.is_empty() || b.state == query.state)
        .map(|b| b.id)
        .collect();
    let shown: Vec<i64> = kept
        .iter()
        .skip(query.offset)
        .take(limit)
        .copied()
        .collect();
    let now = Utc::now();
    let mut rows = Vec::with_capacity(shown.len());
    for stack in store.stack_rows(&shown).await? {
        let mut row = serde_json::to_value(&stack).map_err(anyhow::Error::from)?;
        let commit = stack.apply_commit.as_deref().unwrap_or_default();
        let tags: Vec<String> = serde_json::from_str(&stack.tags).unwrap_or_default();
        let fields = json!({
            "tags": tags,
            "state_label": label(&stack.state),
            "last_apply": stack.apply_id.map(|id| json!({
                "id": id, "commit": &commit[..commit.len().min(10)],
                "at": when(stack.apply_finished_at),
                "status": stack.apply_status.0.map(RunStatus::as_str),
            })),
            "last_plan": stack.plan_id.map(|id| json!({
                "id": id, "status": stack.plan_status.0.map(RunStatus::as_str),
                "changes": stack.plan_changes,
            })),
            "drift": stack.drift_state.as_ref().map(|d| json!({
                "state": d,
                "age": (d == "drifted").then(|| stack.drift_since.map(|t| since(t, now))),
                "checked": stack.drift_checked_at.map(|t| since(t, now) + " ago"),
            })),
        });
        if let (Value::Object(row), Value::Object(fields)) = (&mut row, fields) {
            row.extend(fields);
        }
        rows.push(row);
    }
    let all = badges.len();
    let counts = STATES
        .iter()
        .map(|(s, l, color)| {
            let n = counts.get(s).copied().unwrap_or(0);
            json!({ "state": s, "label": l, "count": n, "color": color,
                    "percent": if all == 0 { 0.0 } else { n as f64 * 100.0 / all as f64 } })
        })
        .collect();
    Ok(StacksView {
        rows,
        counts,
        total: kept.len(),
    })
}

pub async fn list(
    State(state_): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Query(query): Query<StacksQuery>,
) -> Result<Response, ApiError> {
    let view = stacks_view(&state_.store, &query, PAGE).await?;
    let more = (query.offset + view.rows.len() < view.total)
        .then(|| format!("/stacks?{}", query.at(query.offset + PAGE)));
    let viewer = viewer(&state_, &headers, who.map(|w| w.0));
    let mut states = vec![""];
    states.extend(STATES.iter().map(|s| s.0));
    render(
        "stacks.html",
        "stacks",
        &viewer,
        json!({
            "stacks": view.rows,
            "counts": view.counts,
            "total": view.total,
            "more": more,
            "json": format!("/api/v1/stacks?{}", query.at(query.offset)),
            "states": states,
            "filters": { "q": query.q, "repo": query.repo, "tag": query.tag, "state": query.state },
        }),
    )
}

/// `GET /api/v1/stacks`: the stacks page as JSON, with the same filters (`q`, `repo`, `tag`,
/// `state`), paginated by `offset` and `limit` (200 by default, at most 1,000); `removed=true`
/// also lists removed stacks. `next` is the query string of the next page, absent on the last.
pub async fn api(
    State(state_): State<AppState>,
    Query(query): Query<StacksQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(PAGE).clamp(1, MAX_LIMIT);
    let view = stacks_view(&state_.store, &query, limit).await?;
    let next = (query.offset + view.rows.len() < view.total).then(|| {
        let mut next = query.at(query.offset + limit);
        next.push_str(&format!("&limit={limit}"));
        if query.removed {
            next.push_str("&removed=true");
        }
        format!("/api/v1/stacks?{next}")
    });
    Ok(Json(json!({
        "stacks": view.rows,
        "total": view.total,
        "offset": query.offset,
        "limit": limit,
        "counts": view.counts.iter().map(|c| (c["state"].as_str().unwrap_or_default().to_string(), c["count"].clone())).collect::<serde_json::Map<_, _>>(),
        "next": next,
    })))
}

pub async fn detail(
    State(state_): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Path((repo, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = &state_.store;
    let (stack, dependents) = store
        .stack_and_dependents(&repo, &path)
        .await?
        .ok_or(ApiError::NotFound("stack"))?;
    let paths = |text: &str| serde_json::from_str::<Vec<String>>(text).unwrap_or_default();
    let upstream = paths(&stack.depends_on);
    let downstream: Vec<&str> = dependents
        .iter()
        .filter(|s| paths(&s.depends_on).contains(&path))
        .map(|s| s.path.as_str())
        .collect();
    let runs = store
        .runs(&crate::store::RunFilter {
            repo: Some(repo.clone()),
            stack: Some(path.clone()),
            limit: 200,
            ..Default::default()
        })
        .await?;
    let lock = store
        .locks()
        .await?
        .into_iter()
        .find(|l| l.repo == repo && l.stack == path);
    let s = store
        .stack_state(&repo, &path)
        .await?
        .map_or_else(|| "in_sync".to_string(), |row| row.state);
    let s = s.as_str();
    let short = |r: &Run| {
        json!({
            "id": r.id, "kind": r.kind.as_str(), "status": r.status.as_str(),
            "commit_short": &r.commit[..r.commit.len().min(10)], "queued": when(Some(r.created_at)),
            "finished": when(r.finished_at), "why": r.reason, "changes": r.change_summary(),
        })
    };
    let applies: Vec<Value> = runs
        .iter()
        .filter(|r| r.kind == RunKind::Apply)
        .map(short)
        .collect();
    let recent: Vec<Value> = runs.iter().take(30).map(short).collect();
    let mut drift: Vec<Value> = store
        .drift_checks(&repo, &path)
        .await?
        .into_iter()
        .map(|c| json!({ "checked": when(Some(c.checked_at)), "result": c.result, "run": c.run_id, "cause": c.cause, "error": c.error, "notified": c.notified }))
        .collect();
    drift.reverse();
    let states: Vec<Value> = store
        .state_versions(&repo, &path)
        .await?
        .into_iter()
        .map(|v| json!({ "serial": v.serial, "resources": v.resource_count, "run": v.run_id, "at": when(Some(v.created_at)) }))
        .collect();
    let viewer = viewer(&state_, &headers, who.map(|w| w.0));
    render(
        "stack.html",
        "stacks",
        &viewer,
        json!({
            "stack": { "repo": repo, "path": path, "environment": stack.environment, "last_commit": stack.last_commit, "state": s, "state_label": label(s) },
            "upstream": upstream,
            "downstream": downstream,
            "lock": lock.map(|l| json!({ "kind": l.kind, "reason": l.reason, "since": when(Some(l.since)) })),
            "can_act": viewer.can_act(),
            "applies": applies,
            "runs": recent,
            "drift": drift,
            "states": states,
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct LockForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// `POST /stacks/{repo}/{path}/lock` and `.../unlock`, from the stack page's forms.
pub async fn act(
    State(state_): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Path((repo, path)): Path<(String, String)>,
    Form(form): Form<LockForm>,
) -> Result<Response, ApiError> {
    let principal = form_principal(&state_, &headers, who, &form.csrf)?;
    let (stack, action) = path.rsplit_once('/').ok_or(ApiError::NotFound("action"))?;
    match action {
        "lock" => {
            let reason = form.reason.trim();
            if reason.is_empty() {
                return Err(ApiError::BadRequest("a lock needs a reason".into()));
            }
            let reason = format!("{reason} (locked by {} from the dashboard)", principal.name);
            if !state_.store.lock(&repo, stack, &reason).await? {
                return Err(ApiError::Conflict(format!("{stack} is locked already")));
            }
        }
        "unlock" => {
            state_.store.unlock(Some(&repo), stack).await?;
            state_.work.notify_waiters();
        }
        _ => return Err(ApiError::NotFound("action")),
    }
    Ok(Redirect::to(&format!("/stacks/{repo}/{stack}")).into_response())
}

/// Drifted stacks, oldest drift first, with their resource counts and last checks.
pub async fn drift(
    State(state_): State<AppState>,
    headers: HeaderMap,
    who: Who,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let mut statuses: Vec<DriftStatus> = state_
        .store
        .drift_statuses()
        .await?
        .into_iter()
        .filter(|d| d.state != "in_sync")
        .collect();
    statuses.sort_by_key(|d| d.since);
    let rows: Vec<Value> = statuses
        .iter()
        .map(|d| {
            json!({ "cells": [
                { "text": d.stack, "href": format!("/stacks/{}/{}", d.repo, d.stack) },
                { "text": d.state, "badge": d.state },
                { "text": since(d.since, now) },
                { "text": d.resources.len().to_string() },
                { "text": d.cause.clone().or(d.error.clone()).unwrap_or_default() },
                { "text": format!("{} ago", since(d.checked_at, now)) },
            ]})
        })
        .collect();
    let viewer = viewer(&state_, &headers, who.map(|w| w.0));
    render(
        "table.html",
        "drift",
        &viewer,
        json!({
            "title": "Drift",
            "intro": "Stacks whose last drift check found drift or failed, the oldest first.",
            "headers": ["stack", "state", "for", "resources", "cause", "last check"],
            "rows": rows,
            "empty": "Nothing has drifted.",
            "json": "/api/v1/drift",
        }),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct DeliveryQuery {
    #[serde(default)]
    repo: String,
    #[serde(default)]
    stack: String,
    since: Option<String>,
}

/// Delivery metrics over a window, with deployments a day as an inline SVG bar chart.
pub async fn delivery(
    State(state_): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Query(query): Query<DeliveryQuery>,
) -> Result<Response, ApiError> {
    let window = query.since.clone().unwrap_or_else(|| "30d".into());
    let span = humantime::parse_duration(&window)
        .ok()
        .and_then(|d| TimeDelta::from_std(d).ok())
        .filter(|d| *d > TimeDelta::zero() && *d <= TimeDelta::days(3650))
        .ok_or_else(|| {
            ApiError::BadRequest(format!("since: {window:?} is not a duration such as 30d"))
        })?;
    let blank = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let filter = HistoryFilter {
        repo: blank(&query.repo),
        stack: blank(&query.stack),
    };
    let now = Utc::now();
    let from = now - span;
    let dora = state_
        .store
        .dora(&filter, from, now, TimeDelta::hours(24))
        .await?;
    let (applies, _) = state_.store.delivery_history(&filter, from).await?;
    let days = span.num_days().clamp(1, 365) as usize;
    let mut per_day = vec![0usize; days];
    for a in applies
        .iter()
        .filter(|a| a.succeeded && a.finished_at >= from)
    {
        let day =
            ((a.finished_at - from).num_seconds() / 86_400).clamp(0, days as i64 - 1) as usize;
        per_day[day] += 1;
    }
    let secs = |s: Option<f64>| s.map_or("-".to_string(), took);
    let rate = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
    let viewer = viewer(&state_, &headers, who.map(|w| w.0));
    render(
        "delivery.html",
        "delivery",
        &viewer,
        json!({
            "dora": dora,
            "per_day": format!("{:.2}", dora.deployment_frequency_per_day),
            "lead_median": secs(dora.lead_time_seconds.median),
            "lead_p90": secs(dora.lead_time_seconds.p90),
            "fail_rate": rate(dora.change_fail_rate),
            "recovery": secs(dora.recovery_time_seconds.median),
            "rework": rate(dora.rework_rate),
            "reconcile": secs(dora.drift_reconcile_seconds.median),
            "chart": bars(&per_day),
            "filters": { "repo": query.repo, "stack": query.stack, "since": window },
            "json": format!("/api/v1/dora?repo={}&stack={}&since={}", url_encode(&query.repo), url_encode(&query.stack), url_encode(&window)),
        }),
    )
}

/// An inline SVG bar chart of daily counts (numbers only: nothing to escape).
fn bars(counts: &[usize]) -> String {
    let (width, height) = (720.0, 120.0);
    let most = counts.iter().copied().max().unwrap_or(0);
    let max = most.max(1) as f64;
    let step = width / counts.len().max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"deployments a day\">",
        height + 14.0
    );
    for (i, n) in counts.iter().enumerate() {
        let h = (*n as f64 / max) * height;
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#2e90fa\"><title>{n}</title></rect>",
            i as f64 * step + 1.0,
            height - h,
            (step - 2.0).max(1.0),
        ));
    }
    svg.push_str(&format!(
        "<line x1=\"0\" x2=\"{width}\" y1=\"{height}\" y2=\"{height}\" stroke=\"#d0d5dd\"/><text x=\"0\" y=\"{}\" font-size=\"11\" fill=\"#667085\">{} days ago</text><text x=\"{width}\" y=\"{}\" font-size=\"11\" fill=\"#667085\" text-anchor=\"end\">today (at most {most} a day)</text></svg>",
        height + 12.0,
        counts.len(),
        height + 12.0
    ));
    svg
}

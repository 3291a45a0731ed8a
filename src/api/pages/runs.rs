//! The runs pages: the queue, running runs and history in one filtered, paginated list; one
//! run with its phases, changes, gate, verdict and log (live over server-sent events while it
//! runs); and the forms that approve, apply or mark it failed.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{form_principal, viewer};
use super::{render, since, took, url_encode, when};
use crate::api::{ApiError, AppState, Principal};
use crate::store::{Run, RunFilter, RunKind, RunStatus};

type Who = Option<axum::Extension<Principal>>;

#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    #[serde(default)]
    repo: String,
    #[serde(default)]
    stack: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    commit: String,
    #[serde(default)]
    pr: String,
    before: Option<i64>,
}

const PAGE: i64 = 50;

/// One run as the list and detail pages show it.
fn row(run: &Run) -> Value {
    let now = Utc::now();
    let took_for = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => Some(since(s, f)),
        (Some(s), None) => Some(format!("{} so far", since(s, now))),
        _ => None,
    };
    json!({
        "id": run.id,
        "repo": run.repo,
        "stack": run.stack,
        "kind": run.kind.as_str(),
        "status": run.status.as_str(),
        "why": run.reason.clone().unwrap_or_default(),
        "commit": run.commit,
        "commit_short": &run.commit[..run.commit.len().min(10)],
        "pr": run.pr_number,
        "queued": when(Some(run.created_at)),
        "started": when(run.started_at),
        "finished": when(run.finished_at),
        "took": took_for,
        "changes": run.change_summary(),
        "worker": (run.status == RunStatus::Running).then(|| run.worker.clone()).flatten(),
        "plan_run_id": run.plan_run_id,
        "error": run.error.as_deref().filter(|_| run.status != RunStatus::Succeeded),
    })
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Query(query): Query<RunsQuery>,
) -> Result<Response, ApiError> {
    let blank = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let filter = RunFilter {
        repo: blank(&query.repo),
        stack: blank(&query.stack),
        status: blank(&query.status)
            .map(|s| s.parse())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        kind: blank(&query.kind)
            .map(|s| s.parse())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        limit: PAGE,
        before: query.before,
        commit: blank(&query.commit),
        pr: blank(&query.pr)
            .map(|p| p.trim_start_matches('#').parse::<i64>())
            .transpose()
            .map_err(|_| ApiError::BadRequest(format!("pr: {:?} is not a number", query.pr)))?,
    };
    let runs = state.store.runs(&filter).await?;
    let queued: Vec<&Run> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Queued)
        .collect();
    let (positions, locked, frozen) = if queued.is_empty() {
        (HashMap::new(), HashSet::new(), None)
    } else {
        let order = state.store.queue_order().await?;
        let positions: HashMap<i64, usize> = order
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i + 1))
            .collect();
        let locked: HashSet<(String, String)> = state
            .store
            .locks()
            .await?
            .into_iter()
            .map(|l| (l.repo, l.stack))
            .collect();
        (positions, locked, state.store.frozen().await?)
    };
    let now = Utc::now();
    let mut rows = Vec::with_capacity(runs.len());
    for run in &runs {
        let mut value = row(run);
        if run.status == RunStatus::Queued {
            value["position"] = json!(positions.get(&run.id));
            value["waited"] = json!(since(run.created_at, now));
            let upstream = state.store.upstream_runs(run.id).await?;
            let waiting: Vec<String> = upstream
                .iter()
                .filter(|u| !u.status.is_final())
                .map(|u| format!("run #{} of {}", u.id, u.stack))
                .collect();
            value["waits_for"] = json!(if !waiting.is_empty() {
                format!("waits for {}", waiting.join(", "))
            } else if locked.contains(&(run.repo.clone(), run.stack.clone())) {
                "waits for the stack's lock".to_string()
            } else if let (Some(f), RunKind::Apply) = (&frozen, run.kind) {
                format!("waits for the apply freeze ({})", f.reason)
            } else {
                String::new()
            });
        }
        rows.push(value);
    }
    let params = |before: Option<i64>| {
        let mut q = Vec::new();
        for (k, v) in [
            ("repo", &query.repo),
            ("stack", &query.stack),
            ("kind", &query.kind),
            ("status", &query.status),
            ("commit", &query.commit),
            ("pr", &query.pr),
        ] {
            if !v.is_empty() {
                q.push(format!("{k}={}", url_encode(v)));
            }
        }
        if let Some(b) = before {
            q.push(format!("before={b}"));
        }
        q.join("&")
    };
    let next = (runs.len() as i64 == PAGE)
        .then(|| runs.last().map(|r| format!("/runs?{}", params(Some(r.id)))))
        .flatten();
    let viewer = viewer(&state, &headers, who.map(|w| w.0));
    let mut statuses = vec![""];
    statuses.extend(RunStatus::ALL.iter().map(|s| s.as_str()));
    render(
        "runs.html",
        "runs",
        &viewer,
        json!({
            "runs": rows,
            "filters": {
                "repo": query.repo, "stack": query.stack, "kind": query.kind,
                "status": query.status, "commit": query.commit, "pr": query.pr,
            },
            "statuses": statuses,
            "next": next,
            "json": format!("/api/v1/runs?{}", params(query.before)),
        }),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    #[serde(default)]
    address: String,
    #[serde(default)]
    notice: String,
}

/// The phases a run's log records (`init ended: exit 0 after 812 ms`), in order.
fn phases(logs: &[crate::store::LogEntry]) -> Vec<Value> {
    logs.iter()
        .filter(|l| l.stream == "system")
        .filter_map(|l| {
            let (name, rest) = l.text.split_once(" ended: ")?;
            let ms: f64 = rest
                .rsplit_once(" after ")?
                .1
                .strip_suffix(" ms")?
                .parse()
                .ok()?;
            Some(json!({ "name": name, "took": took(ms / 1000.0) }))
        })
        .collect()
}

/// The plan's resource changes, destroys and replaces first.
fn changes(run: &Run, address: &str) -> Option<Vec<Value>> {
    let resources = run.summary_value()?.get("resources")?.as_array()?.clone();
    let mut out: Vec<(u8, Value)> = resources
        .iter()
        .filter_map(|r| {
            let addr = r.get("address")?.as_str()?;
            if !address.is_empty() && !addr.contains(address) {
                return None;
            }
            let actions: Vec<&str> = r
                .get("actions")?
                .as_array()?
                .iter()
                .filter_map(|a| a.as_str())
                .collect();
            let (rank, action, class) = match actions.as_slice() {
                ["delete"] => (0, "destroy", "failed"),
                [_, _] => (1, "replace", "failed"),
                ["update"] => (2, "update", "drifted"),
                ["create"] => (3, "create", "succeeded"),
                other => (4, other.first().copied().unwrap_or("read"), ""),
            };
            Some((
                rank,
                json!({ "address": addr, "action": action, "class": class }),
            ))
        })
        .collect();
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1["address"].as_str().cmp(&b.1["address"].as_str()))
    });
    Some(out.into_iter().map(|(_, v)| v).collect())
}

pub async fn detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Path(id): Path<i64>,
    Query(query): Query<DetailQuery>,
) -> Result<Response, ApiError> {
    let run = state
        .store
        .find_run(id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let logs = state.store.logs_after(id, 0).await?;
    let last_log = logs.last().map_or(0, |(i, _)| *i);
    let entries: Vec<crate::store::LogEntry> = logs.into_iter().map(|(_, l)| l).collect();
    let verdict = state.store.verdict(id).await?.map(|(_, v)| v);
    let gate: Option<Value> = run
        .gate_json
        .as_deref()
        .and_then(|g| serde_json::from_str(g).ok());
    let siblings = state
        .store
        .runs(&RunFilter {
            repo: Some(run.repo.clone()),
            stack: Some(run.stack.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    // Newest first: the previous run is the next one in the list.
    let at = siblings.iter().position(|r| r.id == id);
    let prev = at.and_then(|i| siblings.get(i + 1)).map(|r| r.id);
    let next = at
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| siblings.get(i))
        .map(|r| r.id);
    let viewer = viewer(&state, &headers, who.map(|w| w.0));
    let mut actions = Vec::new();
    if viewer.can_act() {
        use crate::store::RunKind;
        let plan_done = run.kind == RunKind::Plan && run.status == RunStatus::Succeeded;
        let has_changes = run
            .change_summary()
            .is_some_and(|c| c.add + c.change + c.destroy + c.replace > 0);
        if plan_done && has_changes && state.store.applied_by(id).await?.is_none() {
            actions.push(json!({ "action": "approve", "label": "Approve and apply", "confirm": format!("Approve run #{id} and apply its plan to {}?", run.stack) }));
            actions.push(json!({ "action": "override", "label": "Override policy", "reason": "why the policy may be overridden", "confirm": "Override the soft-mandatory policy failures of this plan?" }));
        }
        if run.kind == RunKind::Apply && run.status == RunStatus::Succeeded {
            actions.push(json!({ "action": "mark-failed", "label": "Mark failed", "reason": "what broke", "confirm": "Count this deployment as a failure in the delivery metrics?" }));
        }
    }
    let mut value = row(&run);
    value["marked_failed"] = json!(marked_failed(&state, id).await?);
    let notice = match query.notice.as_str() {
        "refused" => Some(("The gate refused the apply; its checks are below.", "error")),
        "overridden" => Some(("Override recorded.", "")),
        "marked" => Some((
            "Marked failed: the delivery metrics count it as a failure.",
            "",
        )),
        _ => None,
    };
    let logs: Vec<Value> = entries
        .iter()
        .map(|l| json!({ "stream": l.stream, "line": format!("[{}] {}", l.step, l.text) }))
        .collect();
    render(
        "run.html",
        "runs",
        &viewer,
        json!({
            "run": value,
            "phases": phases(&entries),
            "changes": changes(&run, query.address.trim()),
            "address": query.address,
            "gate": gate,
            "verdict": verdict,
            "actions": actions,
            "logs": logs,
            "last_log": last_log,
            "live": !run.status.is_final(),
            "prev": prev,
            "next": next,
            "flash": notice.map(|n| n.0),
            "flash_kind": notice.map(|n| n.1),
        }),
    )
}

async fn marked_failed(state: &AppState, id: i64) -> Result<Option<String>, ApiError> {
    Ok(state.store.marked_failed(id).await?)
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    after: i64,
}

/// `GET /runs/{id}/events`: the run's new log lines as `log` events while it runs, then one
/// `end` event with its status.
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    state
        .store
        .find_run(id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let stream = futures_util::stream::unfold(
        (state, query.after, Vec::<Event>::new(), false),
        move |(state, mut after, mut pending, mut ended)| async move {
            loop {
                if let Some(event) = pending.pop() {
                    return Some((Ok(event), (state, after, pending, ended)));
                }
                if ended {
                    return None;
                }
                let final_status = match state.store.find_run(id).await {
                    Ok(Some(run)) if run.status.is_final() => Some(run.status),
                    Ok(Some(_)) => None,
                    _ => Some(RunStatus::Failed),
                };
                let lines = state.store.logs_after(id, after).await.unwrap_or_default();
                let mut batch: Vec<Event> = lines
                    .into_iter()
                    .map(|(line_id, l)| {
                        after = line_id;
                        let data = json!({ "stream": l.stream, "line": format!("[{}] {}", l.step, l.text) });
                        Event::default().event("log").id(line_id.to_string()).data(data.to_string())
                    })
                    .collect();
                if let Some(status) = final_status {
                    batch.push(
                        Event::default()
                            .event("end")
                            .data(json!({ "status": status.as_str() }).to_string()),
                    );
                    ended = true;
                } else if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                batch.reverse();
                pending = batch;
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Deserialize)]
pub struct ActForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// The run page's forms: approve (and apply), override, mark failed.
pub async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<ActForm>,
) -> Result<Response, ApiError> {
    let principal = form_principal(&state, &headers, who, &form.csrf)?;
    let actor = format!("{} (dashboard)", principal.name);
    let reason = form.reason.trim();
    let store = &state.store;
    let refused = |e: anyhow::Error| ApiError::Conflict(format!("{e:#}"));
    let to = match action.as_str() {
        "approve" => {
            let requested = crate::engine::apply::approve(store, id, &actor, None)
                .await
                .map_err(refused)?;
            state.work.notify_waiters();
            match requested.apply_run {
                Some(apply) => format!("/runs/{apply}"),
                None => format!("/runs/{id}?notice=refused"),
            }
        }
        "override" if !reason.is_empty() => {
            crate::engine::apply::override_verdict(store, id, &actor, reason)
                .await
                .map_err(refused)?;
            state.work.notify_waiters();
            format!("/runs/{id}?notice=overridden")
        }
        "mark-failed" if !reason.is_empty() => {
            if !store
                .mark_failed(id, &format!("{reason} ({actor})"))
                .await?
            {
                return Err(ApiError::Conflict(format!(
                    "run {id} is not a succeeded apply"
                )));
            }
            format!("/runs/{id}?notice=marked")
        }
        "override" | "mark-failed" => {
            return Err(ApiError::BadRequest(format!("{action} needs a reason")));
        }
        _ => return Err(ApiError::NotFound("action")),
    };
    Ok(Redirect::to(&to).into_response())
}

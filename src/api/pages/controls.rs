//! The control pages: locks with the global apply freeze (its form confirmed, its action
//! audited), the audit log, and one commit's affected stacks with their plan, policy, apply
//! and drift results.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{check_csrf, form_principal, viewer};
use super::{render, since, when};
use crate::api::{ApiError, AppState, Principal};
use crate::store::{Run, RunFilter, RunKind};

type Who = Option<axum::Extension<Principal>>;

/// The freeze as the pages and `GET /api/v1/freeze` show it.
pub(in crate::api) async fn freeze_view(state: &AppState) -> Result<Value, ApiError> {
    Ok(match state.store.frozen().await? {
        Some(f) => json!({
            "frozen": true, "reason": f.reason, "actor": f.actor,
            "since": f.created_at, "for": since(f.created_at, Utc::now()),
        }),
        None => json!({ "frozen": false }),
    })
}

/// Held stacks, and the apply freeze with its form.
pub async fn locks(
    State(state): State<AppState>,
    headers: HeaderMap,
    who: Who,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let locks: Vec<Value> = state
        .store
        .locks()
        .await?
        .into_iter()
        .map(|l| {
            json!({
                "repo": l.repo, "stack": l.stack, "kind": l.kind, "reason": l.reason,
                "run": l.run_id, "for": since(l.since, now),
            })
        })
        .collect();
    let freeze = freeze_view(&state).await?;
    let viewer = viewer(&state, &headers, who.map(|w| w.0));
    let can_act = viewer.can_act();
    render(
        "locks.html",
        "locks",
        &viewer,
        json!({ "locks": locks, "freeze": freeze, "can_act": can_act }),
    )
}

#[derive(Debug, Deserialize)]
pub struct FreezeForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// `POST /freeze`, from the locks page.
pub async fn act_freeze(
    State(state): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Form(form): Form<FreezeForm>,
) -> Result<Response, ApiError> {
    let principal = form_principal(&state, &headers, who, &form.csrf)?;
    let actor = format!("{} (dashboard)", principal.name);
    freeze(&state, &actor, &form.reason).await?;
    Ok(Redirect::to("/locks").into_response())
}

/// `POST /thaw`, from the locks page.
pub async fn act_thaw(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<FreezeForm>,
) -> Result<Response, ApiError> {
    check_csrf(&state, &headers, &form.csrf)?;
    thaw(&state).await?;
    Ok(Redirect::to("/locks").into_response())
}

/// Freezes applies, as `actor`, for `reason`.
pub(in crate::api) async fn freeze(
    state: &AppState,
    actor: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError::BadRequest("a freeze needs a reason".into()));
    }
    if !state.store.freeze(reason, actor).await? {
        return Err(ApiError::Conflict("applies are frozen already".into()));
    }
    Ok(())
}

/// Lifts the freeze and wakes the workers for the applies that waited.
pub(in crate::api) async fn thaw(state: &AppState) -> Result<(), ApiError> {
    if !state.store.thaw().await? {
        return Err(ApiError::Conflict("applies are not frozen".into()));
    }
    state.work.notify_waiters();
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    before: Option<i64>,
}

const AUDIT_PAGE: i64 = 100;

/// The audit log, newest first (admins only, like `GET /api/v1/audit`).
pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let records = state.store.audit_page(AUDIT_PAGE, query.before).await?;
    let next = (records.len() as i64 == AUDIT_PAGE)
        .then(|| records.last().map(|r| format!("/audit?before={}", r.id)))
        .flatten();
    let rows: Vec<Value> = records
        .iter()
        .map(|r| {
            let ok = r.outcome == "ok";
            json!({ "cells": [
                { "text": when(Some(r.at)) },
                { "text": r.actor },
                { "text": r.action },
                { "text": r.outcome, "badge": if ok { "succeeded" } else { "failed" } },
                { "text": r.remote },
            ]})
        })
        .collect();
    let viewer = viewer(&state, &headers, who.map(|w| w.0));
    render(
        "table.html",
        "audit",
        &viewer,
        json!({
            "title": "Audit log",
            "intro": "Every action over HTTP, the dashboard and the CLI's freeze: who, what, from where and how it ended.",
            "headers": ["at", "who", "what", "outcome", "from"],
            "rows": rows,
            "empty": "Nothing has been done yet.",
            "next": next,
            "json": "/api/v1/audit",
        }),
    )
}

/// The results of one stack's runs of a commit.
#[derive(Default)]
struct StackResults<'a> {
    plan: Option<&'a Run>,
    apply: Option<&'a Run>,
    drift: Option<&'a Run>,
}

/// One commit: the stacks its runs touched, why, and how each plan, policy check, apply and
/// drift check ended (the newest of each kind per stack; pull-request plans are listed too).
pub async fn commit(
    State(state): State<AppState>,
    headers: HeaderMap,
    who: Who,
    Path(sha): Path<String>,
) -> Result<Response, ApiError> {
    if sha.len() < 4 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest(format!(
            "{sha:?} is not a commit sha (at least four hex digits)"
        )));
    }
    let runs = state
        .store
        .runs(&RunFilter {
            commit: Some(sha.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let mut stacks: BTreeMap<(&str, &str, Option<i64>), StackResults> = BTreeMap::new();
    // Newest first: the first run of each kind is the one that counts.
    for run in &runs {
        let entry = stacks
            .entry((run.repo.as_str(), run.stack.as_str(), run.pr_number))
            .or_default();
        let slot = match run.kind {
            RunKind::Plan => &mut entry.plan,
            RunKind::Apply => &mut entry.apply,
            RunKind::Drift => &mut entry.drift,
        };
        slot.get_or_insert(run);
    }
    let brief = |r: Option<&Run>| {
        r.map(|r| json!({ "id": r.id, "status": r.status.as_str(), "changes": r.change_summary(), "error": r.error }))
    };
    let plans: Vec<i64> = stacks
        .values()
        .filter_map(|r| r.plan.map(|p| p.id))
        .collect();
    let verdicts = state.store.verdicts(&plans).await?;
    let mut rows = Vec::with_capacity(stacks.len());
    for ((repo, stack, pr), results) in &stacks {
        let verdict = results
            .plan
            .and_then(|plan| verdicts.get(&plan.id))
            .map(|v| v.passed);
        let why = results
            .plan
            .or(results.apply)
            .or(results.drift)
            .and_then(|r| r.reason.clone());
        rows.push(json!({
            "repo": repo, "stack": stack, "pr": pr, "why": why,
            "plan": brief(results.plan), "apply": brief(results.apply), "drift": brief(results.drift),
            "policy": verdict.map(|passed| if passed { "passed" } else { "blocked" }),
        }));
    }
    let full = runs.first().map(|r| r.commit.clone()).unwrap_or(sha);
    let viewer = viewer(&state, &headers, who.map(|w| w.0));
    render(
        "commit.html",
        "runs",
        &viewer,
        json!({
            "commit": full,
            "commit_short": &full[..full.len().min(12)],
            "stacks": rows,
            "runs": runs.len(),
            "json": format!("/api/v1/runs?commit={full}&limit=1000"),
        }),
    )
}

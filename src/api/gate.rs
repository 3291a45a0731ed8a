//! The apply gate over HTTP: a run's verdict and gate decision, and approve, override and apply
//! (the same as the CLI's). Approving changes infrastructure, so these POSTs need the API token
//! (`api_token_env` in the server config); without one configured they are refused.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use sha2::Digest;

use super::{ApiError, AppState};
use crate::engine::{Requested, apply};

/// The body of approve, override and apply: who acts, and why.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateBody {
    pub actor: Option<String>,
    pub reason: Option<String>,
}

pub(super) async fn verdict(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let run = state
        .store
        .find_run(id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let verdict = state.store.verdict(id).await?;
    let gate: Option<serde_json::Value> = run
        .gate_json
        .as_deref()
        .and_then(|g| serde_json::from_str(g).ok());
    Ok(Json(serde_json::json!({
        "run": id,
        "plan_digest": verdict.as_ref().map(|(d, _)| d),
        "verdict": verdict.as_ref().map(|(_, v)| v),
        "gate": gate,
    })))
}

pub(super) async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Option<Json<GateBody>>,
) -> Result<(StatusCode, Json<Requested>), ApiError> {
    let (actor, body) = authorize(&state, &headers, id, body).await?;
    let requested = apply::approve(&state.store, id, &actor, body.reason.as_deref())
        .await
        .map_err(refused)?;
    Ok(answer(&state, requested))
}

pub(super) async fn override_verdict(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Option<Json<GateBody>>,
) -> Result<(StatusCode, Json<Requested>), ApiError> {
    let (actor, body) = authorize(&state, &headers, id, body).await?;
    let reason = body
        .reason
        .ok_or_else(|| ApiError::BadRequest("an override needs a reason".into()))?;
    let requested = apply::override_verdict(&state.store, id, &actor, &reason)
        .await
        .map_err(refused)?;
    // The override is recorded either way; whether an apply followed is in the body.
    let (_, body) = answer(&state, requested);
    Ok((StatusCode::OK, body))
}

pub(super) async fn apply(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Option<Json<GateBody>>,
) -> Result<(StatusCode, Json<Requested>), ApiError> {
    let (actor, _) = authorize(&state, &headers, id, body).await?;
    let requested = apply::apply(&state.store, id, &actor)
        .await
        .map_err(refused)?;
    Ok(answer(&state, requested))
}

/// 200 when an apply was queued, 409 (with the decision) when the gate refused.
fn answer(state: &AppState, requested: Requested) -> (StatusCode, Json<Requested>) {
    if requested.apply_run.is_some() || requested.replan_run.is_some() {
        state.work.notify_waiters();
    }
    let status = if requested.apply_run.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (status, Json(requested))
}

/// Checks the bearer token and that the run exists; the actor is recorded as given, marked as
/// coming through the API.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    id: i64,
    body: Option<Json<GateBody>>,
) -> Result<(String, GateBody), ApiError> {
    let Some(expected) = &state.api_token else {
        return Err(ApiError::Forbidden(
            "approvals over HTTP are off: set api_token_env in the server config",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Digests compare in time independent of where the token differs.
    let digest = |s: &str| sha2::Sha256::digest(s.as_bytes());
    let matches = given.is_some_and(|given| digest(given) == digest(expected));
    if !matches {
        return Err(ApiError::Unauthorized("a valid bearer token is required"));
    }
    state
        .store
        .find_run(id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let actor = format!("{} (api)", body.actor.as_deref().unwrap_or("unknown"));
    Ok((actor, body))
}

/// The gate's own refusals (an apply run named, no stored plan, nothing to override) are the
/// client's to fix.
fn refused(err: anyhow::Error) -> ApiError {
    ApiError::Conflict(format!("{err:#}"))
}

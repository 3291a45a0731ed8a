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

/// `POST /api/v1/runs/{id}/{action}`: `approve`, `override` (which needs a reason) or `apply`.
pub(super) async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(i64, String)>,
    body: Option<Json<GateBody>>,
) -> Result<(StatusCode, Json<Requested>), ApiError> {
    if !matches!(action.as_str(), "approve" | "override" | "apply") {
        return Err(ApiError::NotFound("action"));
    }
    let (actor, body) = authorize(&state, &headers, id, body).await?;
    let store = &state.store;
    let requested = match action.as_str() {
        "approve" => apply::approve(store, id, &actor, body.reason.as_deref()).await,
        "override" => {
            let reason = body
                .reason
                .ok_or_else(|| ApiError::BadRequest("an override needs a reason".into()))?;
            apply::override_verdict(store, id, &actor, &reason).await
        }
        _ => apply::apply(store, id, &actor).await,
    }
    .map_err(refused)?;
    let (status, body) = answer(&state, requested);
    // An override is recorded either way; whether an apply followed is in the body.
    let status = if action == "override" {
        StatusCode::OK
    } else {
        status
    };
    Ok((status, body))
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

//! The apply gate over HTTP: a run's verdict and gate decision, and approve, override and apply
//! (the same as the CLI's). Approving changes infrastructure, so these POSTs need a token of
//! role operator or admin (`access` in the server config, or `api_token_env`, an admin token);
//! the access middleware refuses them otherwise, and audits them either way.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

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
    principal: Option<axum::Extension<super::Principal>>,
    Path((id, action)): Path<(i64, String)>,
    body: Option<Json<GateBody>>,
) -> Result<(StatusCode, Json<Requested>), ApiError> {
    if !matches!(action.as_str(), "approve" | "override" | "apply") {
        return Err(ApiError::NotFound("action"));
    }
    let (actor, body) = authorize(&state, principal.map(|p| p.0), id, body).await?;
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

/// Checks that the access middleware named the caller and that the run exists; the actor is
/// recorded as given, with the token it came with.
async fn authorize(
    state: &AppState,
    principal: Option<super::Principal>,
    id: i64,
    body: Option<Json<GateBody>>,
) -> Result<(String, GateBody), ApiError> {
    let Some(principal) = principal else {
        return Err(ApiError::Unauthorized("a valid bearer token is required"));
    };
    state
        .store
        .find_run(id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    // The token is who acts; a name the client adds is kept beside it, never instead of it.
    let actor = match body.actor.as_deref().map(str::trim) {
        Some(named) if !named.is_empty() && named != principal.name => {
            format!("{} (api, for {named})", principal.name)
        }
        _ => format!("{} (api)", principal.name),
    };
    Ok((actor, body))
}

/// The gate's own refusals (an apply run named, no stored plan, nothing to override) are the
/// client's to fix.
fn refused(err: anyhow::Error) -> ApiError {
    ApiError::Conflict(format!("{err:#}"))
}

/// `GET /api/v1/freeze`: whether applies are frozen, why, by whom and since when.
pub(super) async fn frozen(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(super::pages::freeze_view(&state).await?))
}

/// The body of `POST /api/v1/freeze`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    pub reason: String,
}

/// `POST /api/v1/freeze {"reason"}`: no apply starts until `DELETE /api/v1/freeze`; 409 when
/// applies are frozen already.
pub(super) async fn freeze(
    State(state): State<AppState>,
    principal: Option<axum::Extension<super::Principal>>,
    Json(body): Json<FreezeBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = principal.ok_or(ApiError::Unauthorized("a valid bearer token is required"))?;
    let actor = format!("{} (api)", principal.0.name);
    super::pages::freeze(&state, &actor, &body.reason).await?;
    Ok(Json(super::pages::freeze_view(&state).await?))
}

/// `DELETE /api/v1/freeze`: lifts the freeze; 409 when there was none.
pub(super) async fn thaw(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    super::pages::thaw(&state).await?;
    Ok(Json(super::pages::freeze_view(&state).await?))
}

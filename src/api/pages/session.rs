//! Browser sessions: the login form exchanges an access token, or a user's name and password,
//! for a signed session cookie (HttpOnly, SameSite=Strict, Secure behind TLS), valid for 12
//! hours and only while its token or user is still in the config with the same role. Every form carries a CSRF token derived from the
//! session, checked before the form acts.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::{Viewer, render};
use crate::api::{ApiError, AppState, Principal};
use crate::config::Role;
use crate::crypto::PlanKey;

const COOKIE: &str = "tidemark_session";
const HOURS: i64 = 12;

/// What a valid session cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    pub role: Role,
}

fn role(text: &str) -> Option<Role> {
    [Role::Viewer, Role::Operator, Role::Admin]
        .into_iter()
        .find(|r| r.as_str() == text)
}

/// The session cookie's value in a request, if any.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn seal(key: &PlanKey, name: &str, role: Role, expires: i64) -> String {
    let body = format!("v1.{}.{}.{expires}", hex::encode(name), role.as_str());
    let signature = hex::encode(key.sign("session", body.as_bytes()));
    format!("{body}.{signature}")
}

/// The session a request's cookie holds, when its signature is good and it has not expired.
pub fn session_of(headers: &HeaderMap, key: &PlanKey) -> Option<Session> {
    let value = cookie(headers)?;
    let (body, signature) = value.rsplit_once('.')?;
    if !key.verify("session", body.as_bytes(), &hex::decode(signature).ok()?) {
        return None;
    }
    let mut parts = body.split('.');
    let (Some("v1"), Some(name), Some(role_text), Some(expires), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if expires.parse::<i64>().ok()? < Utc::now().timestamp() {
        return None;
    }
    Some(Session {
        name: String::from_utf8(hex::decode(name).ok()?).ok()?,
        role: role(role_text)?,
    })
}

/// The CSRF token of the request's session (empty without one).
fn csrf_of(headers: &HeaderMap, key: &PlanKey) -> String {
    cookie(headers)
        .map(|c| hex::encode(key.sign("csrf", c.as_bytes())))
        .unwrap_or_default()
}

/// Who is looking, with the CSRF token their forms carry.
pub(in crate::api) fn viewer(
    state: &AppState,
    headers: &HeaderMap,
    principal: Option<Principal>,
) -> Viewer {
    let csrf = match &principal {
        Some(p) if p.session => csrf_of(headers, &state.key),
        _ => String::new(),
    };
    Viewer { principal, csrf }
}

/// Refuses a form whose CSRF token is not the session's.
pub(in crate::api) fn check_csrf(
    state: &AppState,
    headers: &HeaderMap,
    given: &str,
) -> Result<(), ApiError> {
    let want = csrf_of(headers, &state.key);
    if want.is_empty() || want != given {
        return Err(ApiError::Forbidden(
            "the form's CSRF token does not match this session: reload the page and try again",
        ));
    }
    Ok(())
}

/// Who is acting through a dashboard form: the CSRF token must be the session's, and someone
/// must be logged in.
pub(in crate::api) fn form_principal(
    state: &AppState,
    headers: &HeaderMap,
    who: Option<axum::Extension<Principal>>,
    csrf: &str,
) -> Result<Principal, ApiError> {
    check_csrf(state, headers, csrf)?;
    who.map(|w| w.0)
        .ok_or(ApiError::Unauthorized("log in to act"))
}

#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Only a path on this site: never `//host` or `https://...`.
fn local(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

pub async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Next>,
) -> Result<Response, ApiError> {
    let viewer = viewer(&state, &headers, None);
    render(
        "login.html",
        "login",
        &viewer,
        json!({ "next": local(query.next.as_deref()), "users": !state.access.users.is_empty() }),
    )
}

/// The login form: a token, or a user name and password. No `Debug`: it holds the secret.
#[derive(Deserialize)]
pub struct Login {
    #[serde(default)]
    token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Result<Response, ApiError> {
    let next = local(form.next.as_deref());
    let remote = "dashboard login";
    let username = form.username.trim();
    let found = if username.is_empty() {
        let token = state.access.token_named_by(form.token.trim());
        token.map(|t| (t.name.clone(), t.role))
    } else {
        state.access.password_login(username, &form.password).await
    };
    let Some((name, role)) = found else {
        let (outcome, flash) = if username.is_empty() {
            (
                "401 the token is not valid".to_string(),
                "That token is not valid.",
            )
        } else {
            (
                format!("401 wrong password or unknown user {username:?}"),
                "Wrong user name or password.",
            )
        };
        let _ = state
            .store
            .record_audit("anonymous", "POST /login", &outcome, remote)
            .await;
        let viewer = viewer(&state, &headers, None);
        let users = !state.access.users.is_empty();
        let mut page = render(
            "login.html",
            "login",
            &viewer,
            json!({ "next": next, "users": users, "flash": flash, "flash_kind": "error" }),
        )?;
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(page);
    };
    let expires = Utc::now().timestamp() + HOURS * 3600;
    let value = seal(&state.key, &name, role, expires);
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        HOURS * 3600,
        if secure { "; Secure" } else { "" }
    );
    let actor = format!("{name} ({})", role.as_str());
    let _ = state
        .store
        .record_audit(&actor, "POST /login", "ok", remote)
        .await;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct Logout {
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Logout>,
) -> Result<Response, ApiError> {
    check_csrf(&state, &headers, &form.csrf)?;
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_cookie_holds_only_what_was_signed() {
        let key = PlanKey::generate();
        let future = Utc::now().timestamp() + 60;
        let value = seal(&key, "ops.team", Role::Operator, future);
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::COOKIE,
                format!("a=b; {COOKIE}={v}").parse().expect("header"),
            );
            h
        };
        assert_eq!(
            session_of(&headers(&value), &key),
            Some(Session {
                name: "ops.team".into(),
                role: Role::Operator
            })
        );
        // Another role, another key, an expired cookie: nothing.
        let forged = value.replace(".operator.", ".admin.");
        assert_eq!(session_of(&headers(&forged), &key), None);
        assert_eq!(session_of(&headers(&value), &PlanKey::generate()), None);
        let old = seal(&key, "ops", Role::Operator, Utc::now().timestamp() - 1);
        assert_eq!(session_of(&headers(&old), &key), None);
        assert_eq!(local(Some("//evil.example")), "/");
        assert_eq!(local(Some("/runs/3")), "/runs/3");
    }
}

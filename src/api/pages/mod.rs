//! The dashboard: server-rendered pages from the templates in `templates/` (minijinja, no
//! JavaScript build), each with a JSON twin under `/api/v1`. Pages read the store; their forms
//! act through the same engine calls as the API, as the logged-in token, with a CSRF token.

mod controls;
mod runs;
mod session;
mod stacks;

pub use stacks::api as stacks_api;

use std::sync::OnceLock;

use axum::Router;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use minijinja::Environment;
use serde_json::{Value, json};

use super::{ApiError, AppState, Principal};
pub(super) use controls::{freeze, freeze_view, thaw};
pub use session::session_of;

/// The dashboard's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(runs::list))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::detail))
        .route("/runs/{id}/events", get(runs::events))
        .route("/runs/{id}/{action}", post(runs::act))
        .route("/stacks", get(stacks::list))
        .route(
            "/stacks/{repo}/{*path}",
            get(stacks::detail).post(stacks::act),
        )
        .route("/drift", get(stacks::drift))
        .route("/locks", get(controls::locks))
        .route("/freeze", post(controls::act_freeze))
        .route("/thaw", post(controls::act_thaw))
        .route("/audit", get(controls::audit))
        .route("/commits/{sha}", get(controls::commit))
        .route("/delivery", get(stacks::delivery))
        .route("/login", get(session::form).post(session::login))
        .route("/logout", post(session::logout))
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("../../../templates/base.html")),
            ("login.html", include_str!("../../../templates/login.html")),
            ("runs.html", include_str!("../../../templates/runs.html")),
            ("run.html", include_str!("../../../templates/run.html")),
            (
                "stacks.html",
                include_str!("../../../templates/stacks.html"),
            ),
            ("stack.html", include_str!("../../../templates/stack.html")),
            (
                "delivery.html",
                include_str!("../../../templates/delivery.html"),
            ),
            ("table.html", include_str!("../../../templates/table.html")),
            ("locks.html", include_str!("../../../templates/locks.html")),
            (
                "commit.html",
                include_str!("../../../templates/commit.html"),
            ),
        ] {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        env
    })
}

/// Who is looking, for the page header and for which buttons it shows.
pub(super) struct Viewer {
    pub principal: Option<Principal>,
    /// The CSRF token of the viewer's session (empty without one).
    pub csrf: String,
}

impl Viewer {
    pub fn can_act(&self) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| p.session && p.role >= crate::config::Role::Operator)
    }
}

/// Renders `template` with `context`, plus the header's `page`, `who` and `csrf`.
fn render(
    template: &str,
    page: &str,
    viewer: &Viewer,
    mut context: Value,
) -> Result<Response, ApiError> {
    context["page"] = json!(page);
    context["csrf"] = json!(viewer.csrf);
    context["who"] = match &viewer.principal {
        Some(p) => json!({ "name": p.name, "role": p.role.as_str(), "session": p.session }),
        None => Value::Null,
    };
    let html = environment()
        .get_template(template)
        .and_then(|t| t.render(minijinja::value::Serde(&context)))
        .map_err(|e| anyhow::anyhow!("rendering {template}: {e:#}"))?;
    Ok(Html(html).into_response())
}

/// A time as the pages show it (UTC, to the second).
fn when(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| {
        json!(at.format("%Y-%m-%d %H:%M:%S").to_string())
    })
}

/// A duration as a person reads it: `850 ms`, `42 s`, `12 min`, `3.5 h`, `2.0 d`.
fn took(seconds: f64) -> String {
    match seconds {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 60.0 => format!("{s:.1} s"),
        s if s < 3600.0 => format!("{:.0} min", s / 60.0),
        s if s < 86_400.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

fn since(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    took((to - from).num_milliseconds().max(0) as f64 / 1000.0)
}

/// Percent-encodes a query value.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_durations_read_well() {
        for name in [
            "runs.html",
            "run.html",
            "stacks.html",
            "stack.html",
            "delivery.html",
            "table.html",
            "login.html",
            "locks.html",
            "commit.html",
        ] {
            environment().get_template(name).expect(name);
        }
        assert_eq!(took(0.25), "250 ms");
        assert_eq!(took(90.0), "2 min");
        assert_eq!(url_encode("/runs?stack=a b"), "/runs%3Fstack%3Da%20b");
    }
}

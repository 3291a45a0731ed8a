//! The dashboard over HTTP, as a browser uses it: a page without a session sends it to log
//! in; the login form trades a token for a session cookie; an operator approves a real plan
//! from its run page (with the page's CSRF token) and the apply happens; a stack is locked
//! and unlocked from its page; a viewer sees no approve button and its form POST is refused;
//! a session cookie never acts over the API; every page renders.

use std::path::Path;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use sha2::Digest;
use tidemark::app::App;
use tidemark::config::Config;
use tidemark::store::{Run, RunFilter, RunKind, RunStatus, Store};

use crate::support::{GitFixture, TestDb, Toolchain, eventually, null_stack};

pub(crate) fn config(dir: &Path, database: &str, repo_url: &str, viewer_sha: &str) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\ndatabase = \"{database}\"\nsandbox = \"none\"\nworkers = 1\n\
         {runner}\nrepo \"infra\" {{\n  url = \"{repo_url}\"\n  poll_interval = \"1s\"\n}}\n\
         access {{\n  open_read = false\n  token \"ops\" {{\n    role = \"operator\"\n    env  = \"PATH\"\n  }}\n  \
         token \"reader\" {{\n    role   = \"viewer\"\n    sha256 = \"{viewer_sha}\"\n  }}\n}}\n",
        data = dir.join("data").display(),
        runner = Toolchain::get().runner_override(),
    );
    let file = dir.join("tidemark.hcl");
    std::fs::write(&file, &text).expect("config");
    tidemark::install_crypto_provider();
    let mut config = Config::parse(&file, &text, dir).expect("valid config");
    config.exe = Some(env!("CARGO_BIN_EXE_tidemark").into());
    config
}

pub(crate) struct Browser {
    pub client: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            client,
            base: format!("http://{addr}"),
            cookie: None,
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String, Option<String>) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await.expect("GET");
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().expect("location").to_string());
        (
            response.status(),
            response.text().await.expect("body"),
            location,
        )
    }

    /// Posts a form (`application/x-www-form-urlencoded`), as a browser submits one.
    pub async fn post(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, Option<String>) {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", tidemark_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await.expect("POST");
        if let Some(set) = response.headers().get(SET_COOKIE) {
            let set = set.to_str().expect("cookie");
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
            self.cookie = Some(set.split(';').next().expect("pair").to_string());
        }
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().expect("location").to_string());
        (response.status(), location)
    }
}

fn tidemark_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the page's first hidden `csrf` field.
pub(crate) fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

async fn runs(store: &Store) -> Vec<Run> {
    store.runs(&RunFilter::default()).await.expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_approves_a_plan_and_locks_a_stack_from_the_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("one"))
        .write("stacks/app/stack.hcl", "stack {\n  tags = [\"web\"]\n}\n");
    git.commit_and_push("one stack");
    let db = TestDb::sqlite();
    let viewer_sha = hex::encode(sha2::Sha256::digest(b"reader-token"));
    let app = App::start(config(dir.path(), &db.url, &git.url(), &viewer_sha))
        .await
        .expect("start");
    let store = Store::open(&db.url).await.expect("store");
    let plan = eventually(120, "the plan", || async {
        runs(&store)
            .await
            .into_iter()
            .find(|r| r.kind == RunKind::Plan && r.status.is_final())
    })
    .await;
    assert_eq!(plan.status, RunStatus::Succeeded, "{plan:#?}");

    // No session: pages send the browser to log in, the API answers 401.
    let mut ops = Browser::new(app.addr);
    let (status, _, location) = ops.get("/runs?stack=stacks/app").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some("/login?next=/runs%3Fstack%3Dstacks/app")
    );
    assert_eq!(ops.get("/api/v1/runs").await.0, StatusCode::UNAUTHORIZED);
    let (status, login, _) = ops.get("/login?next=/runs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(login.contains("type=\"password\" name=\"token\""));
    assert_eq!(
        ops.post("/login", &[("token", "wrong"), ("next", "/runs")])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let operator = std::env::var("PATH").expect("PATH");
    let (status, location) = ops
        .post(
            "/login",
            &[("token", &operator), ("next", "//evil.example/")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/"), "never off-site");

    // The runs list, with why, the change counts and a link to the run.
    let (status, list, _) = ops.get("/runs").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(
        list.contains(&format!("href=\"/runs/{}\"", plan.id)),
        "{list}"
    );
    assert!(list.contains("<span class=\"add\">+1</span>"), "{list}");
    assert!(list.contains("ops <span class=\"badge\">operator</span>"));

    // The run page: phases, the change, the log, the approve button with a CSRF token.
    let (status, page, _) = ops.get(&format!("/runs/{}", plan.id)).await;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        "<th>init</th>",
        "<th>plan</th>",
        "<code>null_resource.this</code>",
        "data-action=\"approve\"",
        "Policy: <span class=\"badge passed\">passed</span>",
    ] {
        assert!(page.contains(needle), "no {needle:?} in\n{page}");
    }
    let token = csrf(&page);
    let approve = format!("/runs/{}/approve", plan.id);
    assert_eq!(
        ops.post(&approve, &[("csrf", "forged")]).await.0,
        StatusCode::FORBIDDEN,
        "a form without the session's CSRF token is refused"
    );
    // A session cookie does not act over the API, whatever its role.
    let api = ops
        .client
        .post(format!("{}/api/v1/runs/{}/approve", ops.base, plan.id))
        .header(COOKIE, ops.cookie.clone().expect("cookie"))
        .send()
        .await
        .expect("POST");
    assert_eq!(api.status(), StatusCode::FORBIDDEN);
    let (status, location) = ops.post(&approve, &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let apply_page = location.expect("to the apply run");
    let apply = eventually(120, "the apply", || async {
        runs(&store)
            .await
            .into_iter()
            .find(|r| r.kind == RunKind::Apply && r.status.is_final())
    })
    .await;
    assert_eq!(apply_page, format!("/runs/{}", apply.id));
    assert_eq!(apply.status, RunStatus::Succeeded, "{apply:#?}");
    let (_, page, _) = ops.get(&apply_page).await;
    assert!(page.contains("badge succeeded"), "{page}");
    assert!(page.contains("[apply]"), "the apply's log is on its page");
    // Its live log stream, once the run is over, ends at once with its status.
    let (_, events, _) = ops.get(&format!("/runs/{}/events", apply.id)).await;
    assert!(
        events.contains("event: end") && events.contains("succeeded"),
        "{events}"
    );
    let audit = store.audit(50).await.expect("audit");
    assert!(
        audit.iter().any(|a| a.actor == "ops (operator)"
            && a.action == format!("POST {approve}")
            && a.outcome == "ok"),
        "{audit:#?}"
    );

    // Lock and unlock from the stack page.
    let (status, stack_page, _) = ops.get("/stacks/infra/stacks/app").await;
    assert_eq!(status, StatusCode::OK, "{stack_page}");
    assert!(stack_page.contains("data-action=\"lock\""));
    assert!(stack_page.contains(&format!("href=\"/runs/{}\"", apply.id)));
    let token = csrf(&stack_page);
    let (status, _) = ops
        .post(
            "/stacks/infra/stacks/app/lock",
            &[("csrf", &token), ("reason", "freeze for the audit")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let locks = store.locks().await.expect("locks");
    assert!(
        locks[0].reason.starts_with("freeze for the audit"),
        "{locks:?}"
    );
    let (_, locks_page, _) = ops.get("/locks").await;
    assert!(locks_page.contains("freeze for the audit"));
    let (_, stacks_page, _) = ops.get("/stacks?state=locked").await;
    assert!(
        stacks_page.contains("badge locked\">locked</span>"),
        "{stacks_page}"
    );
    let (_, stack_page, _) = ops.get("/stacks/infra/stacks/app").await;
    assert!(stack_page.contains("data-action=\"unlock\""));
    ops.post(
        "/stacks/infra/stacks/app/unlock",
        &[("csrf", &csrf(&stack_page))],
    )
    .await;
    assert!(store.locks().await.expect("locks").is_empty());

    // The other pages render; delivery counts the deployment.
    for page in [
        "/stacks",
        "/stacks?q=app&tag=web",
        "/drift",
        "/locks",
        "/delivery?since=7d",
    ] {
        let (status, html, _) = ops.get(page).await;
        assert_eq!(status, StatusCode::OK, "{page}: {html}");
    }
    let (_, delivery, _) = ops.get("/delivery").await;
    assert!(delivery.contains("<svg"), "{delivery}");
    assert!(delivery.contains("<td class=\"num\">1 ("), "{delivery}");

    // A viewer reads, sees no button, and cannot act.
    let mut reader = Browser::new(app.addr);
    reader
        .post("/login", &[("token", "reader-token"), ("next", "/")])
        .await;
    let (status, page, _) = reader.get(&format!("/runs/{}", plan.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("data-action"), "a viewer sees no action");
    let (status, _) = reader.post(&approve, &[("csrf", "")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let api = reader
        .client
        .post(format!("{}/api/v1/runs/{}/approve", reader.base, plan.id))
        .bearer_auth("reader-token")
        .send()
        .await
        .expect("POST");
    assert_eq!(api.status(), StatusCode::FORBIDDEN);
    // Logging out ends the session.
    let (_, page, _) = reader.get("/runs").await;
    let (status, _) = reader.post("/logout", &[("csrf", &csrf(&page))]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(reader.get("/runs").await.0, StatusCode::SEE_OTHER);
}

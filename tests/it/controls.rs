//! The controls that span stacks, through the running service: a global apply freeze holds an
//! approved apply in the queue (the runs page says why) until the thaw, from the API and from
//! the locks page; one commit's page lists its stacks with plan, policy and apply results; a
//! stack's page names its upstream and downstream stacks; the audit page is for admins.

use reqwest::StatusCode;
use sha2::Digest;
use tidemark::app::App;
use tidemark::config::Config;
use tidemark::store::{RunFilter, RunKind, RunStatus, Store};

use crate::dashboard::{Browser, csrf};
use crate::support::{GitFixture, TestDb, Toolchain, eventually, null_stack};

/// A page as a browser reads its attributes (minijinja escapes `/` in them).
async fn page(browser: &Browser, path: &str) -> (StatusCode, String) {
    let (status, html, _) = browser.get(path).await;
    (status, html.replace("&#x2f;", "/"))
}

pub(crate) fn config(dir: &std::path::Path, database: &str, repo_url: &str) -> Config {
    let viewer_sha = hex::encode(sha2::Sha256::digest(b"reader-token"));
    let admin_sha = hex::encode(sha2::Sha256::digest(b"admin-token"));
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\ndatabase = \"{database}\"\nsandbox = \"none\"\nworkers = 1\n\
         {runner}\nrepo \"infra\" {{\n  url = \"{repo_url}\"\n  poll_interval = \"1s\"\n}}\n\
         access {{\n  token \"ops\" {{\n    role = \"operator\"\n    env  = \"PATH\"\n  }}\n  \
         token \"root\" {{\n    role   = \"admin\"\n    sha256 = \"{admin_sha}\"\n  }}\n  \
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_holds_applies_and_commit_and_stack_pages_show_the_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/network/main.tf", &null_stack("net"))
        .write("stacks/network/stack.hcl", "stack {}\n")
        .write("stacks/app/main.tf", &null_stack("app"))
        .write(
            "stacks/app/stack.hcl",
            "stack {\n  depends_on = [\"stacks/network\"]\n}\n",
        );
    let head = git.commit_and_push("network and app");
    let db = TestDb::sqlite();
    let app = App::start(config(dir.path(), &db.url, &git.url()))
        .await
        .expect("start");
    let store = Store::open(&db.url).await.expect("store");
    let plans = eventually(120, "both plans", || async {
        let runs = store.runs(&RunFilter::default()).await.ok()?;
        let done: Vec<_> = runs
            .into_iter()
            .filter(|r| r.kind == RunKind::Plan && r.status.is_final())
            .collect();
        (done.len() == 2).then_some(done)
    })
    .await;
    assert!(
        plans.iter().all(|r| r.status == RunStatus::Succeeded),
        "{plans:#?}"
    );
    let app_plan = plans
        .iter()
        .find(|r| r.stack == "stacks/app")
        .expect("app plan");
    let base = format!("http://{}", app.addr);
    let http = reqwest::Client::new();
    let operator = std::env::var("PATH").expect("PATH");

    // A body over the API's 64 KiB cap is refused with 413 before it is read, and freezes
    // nothing.
    let huge = http
        .post(format!("{base}/api/v1/freeze"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({ "reason": "x".repeat(100 * 1024) }))
        .send()
        .await
        .expect("huge freeze");
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(store.frozen().await.expect("frozen"), None);

    // Freeze over the API; a second freeze is a conflict; a viewer may read but not freeze.
    let frozen = http
        .post(format!("{base}/api/v1/freeze"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({ "reason": "release 4.2" }))
        .send()
        .await
        .expect("freeze");
    assert_eq!(frozen.status(), StatusCode::OK);
    let body: serde_json::Value = frozen.json().await.expect("json");
    assert_eq!(body["frozen"], true);
    assert_eq!(body["reason"], "release 4.2");
    assert_eq!(body["actor"], "ops (api)");
    let again = http
        .post(format!("{base}/api/v1/freeze"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({ "reason": "twice" }))
        .send()
        .await
        .expect("freeze again");
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let viewer = http
        .get(format!("{base}/api/v1/freeze"))
        .bearer_auth("reader-token")
        .send()
        .await
        .expect("read freeze");
    assert_eq!(viewer.status(), StatusCode::OK);
    let refused = http
        .delete(format!("{base}/api/v1/freeze"))
        .bearer_auth("reader-token")
        .send()
        .await
        .expect("thaw as viewer");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // An approval while frozen queues the apply, which waits and says why.
    let approved = http
        .post(format!("{base}/api/v1/runs/{}/approve", app_plan.id))
        .bearer_auth(&operator)
        .send()
        .await
        .expect("approve");
    assert_eq!(approved.status(), StatusCode::OK);
    let apply_id = approved.json::<serde_json::Value>().await.expect("json")["apply_run"]
        .as_i64()
        .expect("apply run id");
    let mut ops = Browser::new(app.addr);
    ops.post("/login", &[("token", &operator), ("next", "/")])
        .await;
    // A plan queued behind the freeze still runs: poll once more and wait a worker cycle.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let apply = store.find_run(apply_id).await.expect("run").expect("apply");
    assert_eq!(apply.status, RunStatus::Queued, "frozen: the apply waits");
    let (_, runs_page, _) = ops.get("/runs?kind=apply").await;
    assert!(
        runs_page.contains("waits for the apply freeze (release 4.2)"),
        "{runs_page}"
    );
    let (_, locks_page, _) = ops.get("/locks").await;
    assert!(locks_page.contains("data-action=\"thaw\""), "{locks_page}");
    assert!(locks_page.contains("release 4.2"));

    // Thaw from the locks page (CSRF-checked): the apply runs.
    assert_eq!(
        ops.post("/thaw", &[("csrf", "forged")]).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, location) = ops.post("/thaw", &[("csrf", &csrf(&locks_page))]).await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/locks"))
    );
    let apply = eventually(120, "the apply after the thaw", || async {
        let run = store.find_run(apply_id).await.ok()??;
        run.status.is_final().then_some(run)
    })
    .await;
    assert_eq!(apply.status, RunStatus::Succeeded, "{apply:#?}");
    assert!(store.frozen().await.expect("frozen").is_none());

    // The locks page freezes again, confirmed and audited.
    let (_, locks_page, _) = ops.get("/locks").await;
    assert!(locks_page.contains("data-action=\"freeze\""));
    let (status, _) = ops
        .post(
            "/freeze",
            &[("csrf", &csrf(&locks_page)), ("reason", "incident 77")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let freeze = store.frozen().await.expect("frozen").expect("a freeze");
    assert_eq!(
        (freeze.reason.as_str(), freeze.actor.as_str()),
        ("incident 77", "ops (dashboard)")
    );

    // The commit's page: both stacks, why, plan and policy; the app's apply.
    let (status, commit_page) = page(&ops, &format!("/commits/{}", &head[..8])).await;
    assert_eq!(status, StatusCode::OK, "{commit_page}");
    for needle in [
        "stacks/network",
        "stacks/app",
        &format!("href=\"/runs/{}\"", app_plan.id),
        &format!("href=\"/runs/{apply_id}\""),
        "badge passed",
        "2 stack(s)",
    ] {
        assert!(
            commit_page.contains(needle),
            "no {needle:?} in\n{commit_page}"
        );
    }
    assert_eq!(ops.get("/commits/xyz").await.0, StatusCode::BAD_REQUEST);
    let api: serde_json::Value = http
        .get(format!("{base}/api/v1/runs?commit={}", &head[..8]))
        .bearer_auth("reader-token")
        .send()
        .await
        .expect("runs of the commit")
        .json()
        .await
        .expect("json");
    assert_eq!(api["runs"].as_array().expect("runs").len(), 3, "{api:#}");

    // Upstream and downstream on the stack pages.
    let (_, app_page) = page(&ops, "/stacks/infra/stacks/app").await;
    assert!(
        app_page.contains("<dt>upstream</dt><dd><a href=\"/stacks/infra/stacks/network\">"),
        "{app_page}"
    );
    let (_, network_page) = page(&ops, "/stacks/infra/stacks/network").await;
    assert!(
        network_page.contains("<dt>downstream</dt><dd><a href=\"/stacks/infra/stacks/app\">"),
        "{network_page}"
    );

    // The audit log: admins only; it holds the freezes and the thaw.
    assert_eq!(ops.get("/audit").await.0, StatusCode::FORBIDDEN);
    let mut root = Browser::new(app.addr);
    root.post("/login", &[("token", "admin-token"), ("next", "/")])
        .await;
    let (status, audit) = page(&root, "/audit").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    for needle in [
        "POST /api/v1/freeze",
        "POST /thaw",
        "POST /freeze",
        "409 Conflict",
        "403 Forbidden",
    ] {
        assert!(audit.contains(needle), "no {needle:?} in\n{audit}");
    }
    assert!(
        audit.contains("href=\"/audit\""),
        "admins see the audit link"
    );
}

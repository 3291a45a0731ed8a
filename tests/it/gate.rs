//! The apply gate end to end with real terraform: auto-apply of a passing plan, a deletion
//! blocked by the shipped policy with its message in the verdict, overrides bound to one plan,
//! approvals of stale plans refused, and downstream plans deferred behind an upstream apply.

use sha2::Digest as _;
use std::path::Path;
use std::process::Command;

use tidemark::app::App;
use tidemark::config::Config;
use tidemark::engine::apply;
use tidemark::gate::{Action, Decision};
use tidemark::policy::Blocking;
use tidemark::store::{Run, RunFilter, RunKind, RunStatus, Store};

use crate::support::{GitFixture, TestDb, Toolchain, eventually};

/// A stack of one null_resource (unless `resource` is false) and one output. It declares no
/// backend, so its state lives in Tidemark's state backend across runs.
fn stack(value: &str, resource: bool, output: &str) -> String {
    let resource = if resource {
        format!(
            "resource \"null_resource\" \"this\" {{\n  triggers = {{ value = \"{value}\" }}\n}}\n"
        )
    } else {
        String::new()
    };
    format!(
        "terraform {{\n  required_providers {{\n    null = {{ source = \"hashicorp/null\", version = \"2.1.2\" }}\n  }}\n}}\n\n{resource}\noutput \"value\" {{ value = \"{output}\" }}\n"
    )
}

struct Setup {
    app: App,
    git: GitFixture,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// The service on `database` tracking a fresh repository, its runs in the bubblewrap sandbox.
async fn setup(database: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/stack.hcl", "stack {\n  auto_apply = true\n}\n")
        .write("stacks/app/main.tf", &stack("a1", true, "out-1"))
        .write(
            "stacks/web/stack.hcl",
            "stack {\n  depends_on = [\"stacks/app\"]\n  auto_apply = true\n}\n",
        )
        .write("stacks/web/main.tf", &stack("w1", true, "web"))
        .write("stacks/db/stack.hcl", "stack {}\n")
        .write("stacks/db/main.tf", &stack("d1", true, "db"));
    git.commit_and_push("three stacks");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = \"{database}\"\ndata_dir = \"{}\"\nworkers = 2\n\n{}\nrepo \"infra\" {{\n  url = \"{}\"\n  poll_interval = \"1s\"\n}}\n",
        dir.path().join("data").display(),
        Toolchain::get().runner_override(),
        git.url(),
    );
    let config = dir.path().join("tidemark.hcl");
    std::fs::write(&config, &text).expect("write config");
    let mut parsed = Config::parse(&config, &text, dir.path()).expect("valid config");
    parsed.exe = Some(env!("CARGO_BIN_EXE_tidemark").into());
    let app = App::start(parsed).await.expect("start tidemark");
    Setup {
        app,
        git,
        config,
        _dir: dir,
    }
}

async fn runs_of(store: &Store, stack: &str) -> Vec<Run> {
    let filter = RunFilter {
        stack: Some(stack.into()),
        ..Default::default()
    };
    let mut runs = store.runs(&filter).await.expect("runs");
    runs.reverse();
    runs
}

/// Waits until the stack has `count` runs, all final; returns them oldest first.
async fn settled(store: &Store, stack: &str, count: usize) -> Vec<Run> {
    eventually(120, &format!("{count} settled runs of {stack}"), || async {
        let runs = runs_of(store, stack).await;
        (runs.len() >= count && runs.iter().all(|r| r.status.is_final())).then_some(runs)
    })
    .await
}

fn gate(run: &Run) -> Decision {
    serde_json::from_str(run.gate_json.as_deref().expect("a gate decision")).expect("decision")
}

fn cli(config: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .args([
            "--config",
            config.to_str().expect("utf-8"),
            "--format",
            "json",
        ])
        .env("TIDEMARK_ACTOR", "carol")
        .output()
        .expect("run tidemark");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

async fn the_gate_end_to_end(database: &str) {
    let s = setup(database).await;
    let store = s.app.store.clone();

    // Commit 1: app (auto_apply) is planned, passes the shipped policies and is applied; web
    // depends on app, so its plan waits for app's apply (a deferred plan), then is applied too.
    let app_runs = settled(&store, "stacks/app", 2).await;
    let (plan, applied) = (&app_runs[0], &app_runs[1]);
    assert_eq!(
        (plan.kind, plan.status),
        (RunKind::Plan, RunStatus::Succeeded),
        "{plan:#?}"
    );
    assert_eq!(applied.kind, RunKind::Apply);
    assert_eq!(
        applied.status,
        RunStatus::Succeeded,
        "{applied:#?}: {:#?}",
        store.logs(applied.id).await
    );
    assert_eq!(applied.plan_run_id, Some(plan.id));
    let decision = gate(applied);
    assert!(decision.allowed, "{decision:#?}");
    assert_eq!(decision.checks.len(), 3);
    assert!(
        decision.checks[1].detail.contains("auto_apply"),
        "{decision:#?}"
    );
    let (_, verdict) = store
        .verdict(plan.id)
        .await
        .expect("verdict")
        .expect("stored verdict");
    assert!(verdict.passed, "{verdict:#?}");
    let version = store
        .latest_state("infra", "stacks/app")
        .await
        .expect("state")
        .expect("the apply stored a state version");
    assert_eq!(version.run_id, Some(applied.id));
    assert_eq!(version.resource_count, 1);
    let web = settled(&store, "stacks/web", 2).await;
    // The deferred plan waited for the apply (timestamps from two writers prove nothing).
    let waited: Vec<i64> = store
        .upstream_runs(web[0].id)
        .await
        .expect("deps")
        .iter()
        .map(|r| r.id)
        .collect();
    assert!(
        waited.contains(&applied.id),
        "web waited for {waited:?}, not apply {}",
        applied.id
    );
    assert_eq!(web[1].status, RunStatus::Succeeded, "{web:#?}");

    // A downstream plan queued only because its upstream changed is skipped when the upstream's
    // apply changed no output, and planned behind the apply when it did.
    let extra = "resource \"null_resource\" \"extra\" {}\n";
    s.git
        .write("stacks/app/main.tf", &(stack("a1", true, "out-1") + extra));
    s.git
        .commit_and_push("app: one more resource, same outputs");
    let app_runs = settled(&store, "stacks/app", 4).await;
    assert_eq!(app_runs[3].status, RunStatus::Succeeded, "{app_runs:#?}");
    assert_eq!(
        app_runs[3].summary_value().expect("summary")["outputs_changed"],
        false
    );
    let web = settled(&store, "stacks/web", 3).await;
    assert_eq!(web[2].status, RunStatus::Superseded, "{web:#?}");
    assert!(
        web[2]
            .error
            .as_deref()
            .expect("why")
            .contains("changed no outputs")
    );
    s.git
        .write("stacks/app/main.tf", &(stack("a1", true, "out-2") + extra));
    s.git.commit_and_push("app: a new output value");
    let app_runs = settled(&store, "stacks/app", 6).await;
    assert_eq!(
        app_runs[5].summary_value().expect("summary")["outputs_changed"],
        true
    );
    let web = settled(&store, "stacks/web", 4).await;
    assert_eq!(web[3].status, RunStatus::Succeeded, "{web:#?}");
    let waited: Vec<i64> = store
        .upstream_runs(web[3].id)
        .await
        .expect("deps")
        .iter()
        .map(|r| r.id)
        .collect();
    assert!(waited.contains(&app_runs[5].id), "{waited:?} {web:#?}");

    // db has no auto_apply: its plan waits for an approval, given through the CLI.
    let db = settled(&store, "stacks/db", 1).await;
    assert_eq!(db[0].status, RunStatus::Succeeded);
    let (code, out) = cli(&s.config, &["apply", &db[0].id.to_string()]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["decision"]["action"], "refuse");
    assert!(
        out["decision"]["checks"][1]["detail"]
            .as_str()
            .expect("detail")
            .contains("not approved")
    );
    let (code, out) = cli(&s.config, &["approve", &db[0].id.to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out["apply_run"].is_i64(), "{out}");
    let db = settled(&store, "stacks/db", 2).await;
    assert_eq!(
        db[1].status,
        RunStatus::Succeeded,
        "{:#?}",
        store.logs(db[1].id).await
    );
    assert!(gate(&db[1]).checks[1].detail.contains("approved by carol"));

    // Commit 2 deletes app's resource: the shipped policy blocks the auto-apply and the
    // verdict names the resource. The output stays, so nothing downstream is re-planned.
    s.git
        .write("stacks/app/main.tf", &stack("", false, "out-1"))
        .write("stacks/db/main.tf", &stack("", false, "db"));
    s.git.commit_and_push("delete app's and db's resources");
    let app_runs = settled(&store, "stacks/app", 7).await;
    let blocked = &app_runs[6];
    assert_eq!(
        (blocked.kind, blocked.status),
        (RunKind::Plan, RunStatus::Succeeded)
    );
    let (_, verdict) = store
        .verdict(blocked.id)
        .await
        .expect("verdict")
        .expect("stored");
    assert_eq!(verdict.blocking, Blocking::Soft, "{verdict:#?}");
    assert!(
        verdict
            .failures()
            .any(|r| r.message.contains("null_resource.this would be deleted")),
        "{verdict:#?}"
    );
    let refused = gate(blocked);
    assert_eq!(refused.action, Action::Refuse);
    assert!(!refused.checks[0].passed);
    let (_, out) = cli(&s.config, &["verdict", &blocked.id.to_string()]);
    assert_eq!(out["verdict"]["passed"], false);
    assert!(
        out["verdict"]["results"]
            .to_string()
            .contains("would be deleted"),
        "{out}"
    );

    // db's plan A deletes too. An override of A lets A's policy check pass, but not plan B's.
    let db = settled(&store, "stacks/db", 3).await;
    let plan_a = &db[2];
    let overridden = apply::override_verdict(&store, plan_a.id, "alice", "decommissioning db")
        .await
        .expect("override");
    assert!(overridden.decision.checks[0].passed, "{overridden:#?}");
    assert!(
        overridden.apply_run.is_none(),
        "an override is not an approval"
    );
    s.git.write("stacks/db/main.tf", &stack("", false, "db-2"));
    s.git.commit_and_push("db: another plan that deletes");
    let db = settled(&store, "stacks/db", 4).await;
    let plan_b = &db[3];
    let approved_b = apply::approve(&store, plan_b.id, "bob", None)
        .await
        .expect("approve");
    assert!(approved_b.apply_run.is_none(), "{approved_b:#?}");
    assert!(
        !approved_b.decision.checks[0].passed,
        "A's override let B through"
    );
    // A is stale now: plan B replaced it.
    let approved_a = apply::approve(&store, plan_a.id, "bob", None)
        .await
        .expect("approve");
    assert!(approved_a.apply_run.is_none());
    assert!(!approved_a.decision.checks[2].passed);
    assert!(
        approved_a.decision.checks[2]
            .detail
            .contains(&format!("plan run {}", plan_b.id)),
        "{approved_a:#?}"
    );
    // A hard refusal to override what passed.
    let err = apply::override_verdict(&store, db[0].id, "alice", "x")
        .await
        .expect_err("passed");
    assert!(err.to_string().contains("passed"), "{err:#}");

    // Overriding B itself, with B approved, applies B.
    let overridden = apply::override_verdict(&store, plan_b.id, "alice", "decommissioning db")
        .await
        .expect("override");
    let apply_b = overridden
        .apply_run
        .expect("B is approved and overridden: applied");
    let db = settled(&store, "stacks/db", 5).await;
    assert_eq!(db[4].id, apply_b);
    assert_eq!(
        db[4].status,
        RunStatus::Succeeded,
        "{:#?}",
        store.logs(apply_b).await
    );

    the_gate_over_http(&store, blocked.id, plan_b.id).await;

    s.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_end_to_end_on_sqlite() {
    let db = TestDb::sqlite();
    the_gate_end_to_end(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_end_to_end_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    the_gate_end_to_end(&db.url).await;
}

/// Approve, override and apply over HTTP need the API token; a refusal is a 409 carrying the
/// gate's decision.
async fn the_gate_over_http(store: &Store, blocked: i64, applied_plan: i64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = tidemark::api::AppState {
        store: store.clone(),
        nudges: Default::default(),
        repos: Default::default(),
        webhook_secret: None,
        access: std::sync::Arc::new(tidemark::api::Access {
            open_read: true,
            tokens: vec![tidemark::api::Token {
                name: "test".into(),
                role: tidemark::config::Role::Operator,
                sha256: sha2::Sha256::digest(b"s3cret-token").into(),
            }],
            users: Vec::new(),
            metrics_token: None,
        }),
        key: tidemark::crypto::PlanKey::generate(),
        pulls: Default::default(),
        metrics_per_stack: 0,
        work: Default::default(),
    };
    let server =
        tokio::spawn(async move { axum::serve(listener, tidemark::api::router(state)).await });
    let client = reqwest::Client::new();
    let url = |path: String| format!("http://{addr}/api/v1/runs/{path}");

    let verdict: serde_json::Value = client
        .get(url(format!("{blocked}/verdict")))
        .send()
        .await
        .expect("GET verdict")
        .json()
        .await
        .expect("json");
    assert_eq!(verdict["verdict"]["passed"], false, "{verdict}");
    assert_eq!(verdict["gate"]["action"], "refuse");

    let approve = url(format!("{applied_plan}/approve"));
    let answer = client.post(&approve).send().await.expect("POST");
    assert_eq!(answer.status(), 401);
    let answer = client
        .post(&approve)
        .bearer_auth("wrong")
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status(), 401);
    let answer = client
        .post(url(format!("{applied_plan}/apply")))
        .bearer_auth("s3cret-token")
        .json(&serde_json::json!({ "actor": "dave" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status(), 409);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert!(
        body["decision"]["checks"][2]["detail"]
            .as_str()
            .expect("detail")
            .contains("already applied"),
        "{body}"
    );
    let answer = client
        .post(url("999999/approve".into()))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status(), 404);
    server.abort();
}

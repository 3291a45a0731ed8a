//! Every stack's state badge as `GET /api/v1/stacks` reports it (the stacks page's JSON twin),
//! on SQLite and PostgreSQL: a failed plan, pending changes, an applied plan, a plan without
//! changes, an explicit lock, a running plan, drift, a stack only a pull request planned, and a
//! removed stack; the counts under a filter, and the pages that `next` leads through; a
//! stack's own page; and the capped per-stack series of `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tidemark::store::{NewRun, RunKind, RunOutcome, RunStatus, StackRecord, Store};

use crate::drift_store::{drifted, record};
use crate::support::TestDb;

const LEASE: Duration = Duration::from_secs(600);

fn new_run(repo_id: i64, stack: &str, kind: RunKind) -> NewRun {
    NewRun {
        repo_id,
        stack: stack.into(),
        commit: "c0ffee00c0ffee00".into(),
        kind,
        reason: None,
        after: Vec::new(),
        plan_run: None,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    }
}

/// Queues `run`, claims it and ends it with `status` and a summary of `changes` updates.
async fn ran(store: &Store, run: NewRun, status: RunStatus, changes: Option<u32>) -> i64 {
    let id = store.enqueue(&[run]).await.expect("enqueue")[0];
    let claimed = store
        .claim("w", LEASE)
        .await
        .expect("claim")
        .expect("a run");
    assert_eq!(claimed.id, id);
    let summary = changes.map(|n| {
        json!({ "has_changes": n > 0, "summary": { "add": 0, "change": n, "destroy": 0, "replace": 0 },
                "resources": [], "outputs": [] })
    });
    let outcome = RunOutcome {
        status,
        exit_code: Some(0),
        error: None,
        summary,
    };
    assert!(store.finish(id, "w", &outcome).await.expect("finish"));
    id
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("GET");
    let status = response.status();
    let body = response.text().await.expect("body");
    assert!(status.is_success(), "{path}: {status}: {body}");
    serde_json::from_str(&body).expect("json")
}

async fn story(store: Store) {
    tidemark::install_crypto_provider();
    let repo = store
        .upsert_repo("infra", "file:///x.git", "main", None)
        .await
        .expect("repo");
    let names = [
        "applied", "drifted", "failed", "locked", "nochange", "pending", "pr", "removed", "running",
    ];
    let record_of = |name: &str| StackRecord {
        path: format!("s/{name}"),
        name: name.into(),
        runner: None,
        auto_apply: false,
        tags: if name.starts_with('p') {
            vec!["p-team".into()]
        } else {
            Vec::new()
        },
        drift_schedule: None,
        drift_remediation: Default::default(),
        environment: None,
        depends_on: Vec::new(),
    };
    let all: Vec<StackRecord> = names.iter().map(|n| record_of(n)).collect();
    store.sync_stacks(repo, "c1", &all).await.expect("sync");
    let kept: Vec<StackRecord> = all
        .iter()
        .filter(|r| r.name != "removed")
        .cloned()
        .collect();
    store.sync_stacks(repo, "c2", &kept).await.expect("sync");

    ran(
        &store,
        new_run(repo, "s/failed", RunKind::Plan),
        RunStatus::Failed,
        None,
    )
    .await;
    ran(
        &store,
        new_run(repo, "s/pending", RunKind::Plan),
        RunStatus::Succeeded,
        Some(2),
    )
    .await;
    // An older plan with changes, applied: a newer plan without changes leaves it in sync.
    ran(
        &store,
        new_run(repo, "s/nochange", RunKind::Plan),
        RunStatus::Succeeded,
        Some(3),
    )
    .await;
    ran(
        &store,
        new_run(repo, "s/nochange", RunKind::Plan),
        RunStatus::Succeeded,
        Some(0),
    )
    .await;
    let plan = ran(
        &store,
        new_run(repo, "s/applied", RunKind::Plan),
        RunStatus::Succeeded,
        Some(1),
    )
    .await;
    let apply = NewRun {
        plan_run: Some(plan),
        ..new_run(repo, "s/applied", RunKind::Apply)
    };
    ran(&store, apply, RunStatus::Succeeded, None).await;
    // A pull request's failed plan is not the branch's state.
    let pr = NewRun {
        pr_number: Some(7),
        ..new_run(repo, "s/pr", RunKind::Plan)
    };
    ran(&store, pr, RunStatus::Failed, None).await;
    assert!(
        store
            .lock("infra", "s/locked", "maintenance")
            .await
            .expect("lock")
    );
    store
        .enqueue(&[new_run(repo, "s/running", RunKind::Plan)])
        .await
        .expect("enqueue");
    store
        .claim("w", LEASE)
        .await
        .expect("claim")
        .expect("running");
    record(&store, repo, "s/drifted", &drifted("null_resource.x")).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = tidemark::api::AppState {
        store: store.clone(),
        nudges: Default::default(),
        repos: Default::default(),
        webhook_secret: None,
        access: Arc::new(tidemark::api::Access {
            open_read: true,
            ..Default::default()
        }),
        key: tidemark::crypto::PlanKey::generate(),
        pulls: Default::default(),
        metrics_per_stack: 3,
        work: Default::default(),
    };
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            tidemark::api::router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let listed = get(addr, "/api/v1/stacks").await;
    let states: BTreeMap<&str, &str> = listed["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| {
            (
                s["path"].as_str().expect("path"),
                s["state"].as_str().expect("state"),
            )
        })
        .collect();
    let expected: BTreeMap<&str, &str> = [
        ("s/applied", "in_sync"),
        ("s/drifted", "drifted"),
        ("s/failed", "failed"),
        ("s/locked", "locked"),
        ("s/nochange", "in_sync"),
        ("s/pending", "changes_pending"),
        ("s/pr", "in_sync"),
        ("s/running", "locked"),
    ]
    .into_iter()
    .collect();
    assert_eq!(states, expected, "{listed:#}");
    assert_eq!(listed["total"], 8);
    assert_eq!(
        listed["counts"],
        json!({ "failed": 1, "drifted": 1, "changes_pending": 1, "locked": 2, "in_sync": 3 })
    );
    assert_eq!(listed["next"], Value::Null);
    // The fields the list had before it was the page's twin are all there.
    let pending = &listed["stacks"][5];
    assert_eq!(pending["path"], "s/pending");
    for field in [
        "repo",
        "name",
        "runner",
        "removed",
        "last_commit",
        "updated_at",
        "environment",
    ] {
        assert!(pending.get(field).is_some(), "{field} missing: {pending}");
    }
    assert_eq!(pending["last_plan"]["changes"], 2);
    assert_eq!(pending["tags"], json!(["p-team"]));
    assert_eq!(listed["stacks"][0]["last_apply"]["status"], "succeeded");

    // Filters narrow the counts too; a state filter narrows the list, not the bar.
    let tagged = get(addr, "/api/v1/stacks?tag=p-team&state=in_sync").await;
    assert_eq!(tagged["total"], 1, "{tagged:#}");
    assert_eq!(tagged["stacks"][0]["path"], "s/pr");
    assert_eq!(tagged["counts"]["changes_pending"], 1);

    // Pages of three, followed by `next`, list every stack once and in order.
    let mut seen = Vec::new();
    let mut next = Some("/api/v1/stacks?limit=3".to_string());
    while let Some(path) = next {
        let page = get(addr, &path).await;
        let stacks = page["stacks"].as_array().expect("stacks");
        assert!(stacks.len() <= 3);
        seen.extend(
            stacks
                .iter()
                .map(|s| s["path"].as_str().expect("path").to_string()),
        );
        next = page["next"].as_str().map(str::to_string);
    }
    assert_eq!(
        seen,
        expected.keys().map(|k| k.to_string()).collect::<Vec<_>>()
    );

    // A removed stack is listed only when asked for.
    let with_removed = get(addr, "/api/v1/stacks?removed=true&q=removed").await;
    assert_eq!(with_removed["total"], 1, "{with_removed:#}");
    assert_eq!(with_removed["stacks"][0]["removed"], true);

    // The page shows the same states.
    let page = reqwest::get(format!("http://{addr}/stacks"))
        .await
        .expect("GET /stacks")
        .text()
        .await
        .expect("page");
    assert!(page.contains("changes pending"), "{page}");
    // And each stack's own page its own.
    for (path, badge) in [
        ("s/pending", "badge changes_pending\">changes pending<"),
        ("s/running", "badge locked\">locked<"),
        ("s/drifted", "badge drifted\">drifted<"),
    ] {
        let page = reqwest::get(format!("http://{addr}/stacks/infra/{path}"))
            .await
            .expect("GET a stack")
            .text()
            .await
            .expect("page");
        assert!(page.contains(badge), "{path}: {page}");
    }

    // With a cap of three, /metrics has the first three stacks' states, fresh at each scrape.
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string())))
        .expect("the scrape parses");
    let per_stack: BTreeMap<String, String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "tidemark_stack_state")
        .map(|s| {
            let get = |k: &str| s.labels.get(k).unwrap_or_default().to_string();
            (get("stack"), get("state"))
        })
        .collect();
    let first: BTreeMap<String, String> = expected
        .iter()
        .take(3)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(per_stack, first, "{metrics}");
    let dropped = crate::metrics::value(&scrape, "tidemark_stack_series_dropped", &[]);
    assert_eq!(dropped, 5.0, "{metrics}");
    assert!(
        metrics.contains("tidemark_stack_drift_age_seconds{repo=\"infra\",stack=\"s/drifted\"}"),
        "{metrics}"
    );
    server.abort();
}

#[tokio::test]
async fn stack_states_on_sqlite() {
    let db = TestDb::sqlite();
    story(Store::open(&db.url).await.expect("open sqlite")).await;
}

#[tokio::test]
async fn stack_states_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    story(Store::open(&db.url).await.expect("open postgres")).await;
}

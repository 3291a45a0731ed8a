//! Drift in the store and at the command line: queueing drift checks without doubles, the
//! outbox (429 then 200, a receiver that is down and comes back, concurrent senders), on SQLite
//! and PostgreSQL; `tidemark drift status` and `tidemark drift check` as a user runs them.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tidemark::drift::{CheckResult, Drift, DriftCause, DriftedResource};
use tidemark::engine::{OutboxSender, decide};
use tidemark::notify::{OutboxPolicy, SlackNotifier};
use tidemark::store::{DriftCheck, NewRun, RunKind, RunOutcome, RunStatus, StackRecord, Store};

use crate::drift::{shared_state_stack, terraform};
use crate::notify::{Answer, fast_policy, receiver, receiver_on};
use crate::support::{GitFixture, TestDb, Toolchain};

fn stack(path: &str) -> StackRecord {
    StackRecord {
        path: path.into(),
        name: path.into(),
        runner: None,
        drift_schedule: None,
        drift_remediation: Default::default(),
        environment: None,
        auto_apply: false,
        tags: Vec::new(),
        depends_on: Vec::new(),
    }
}

pub(crate) fn drifted(address: &str) -> CheckResult {
    let drift = Drift {
        resources: vec![DriftedResource {
            address: address.into(),
            actions: vec!["delete".into(), "create".into()],
        }],
        outputs: vec!["value".into()],
    };
    CheckResult::Drifted {
        fingerprint: drift.fingerprint(),
        drift,
        cause: DriftCause::ChangedOutsideGit,
        outside: None,
    }
}

/// Records a drift check of `stack` with `result` as a finished drift run would; returns the
/// outbox id of the message it called for. The check points at a run row of its own (a plan:
/// it stays queued, and only one drift run of a stack may be queued).
pub(crate) async fn record(
    store: &Store,
    repo_id: i64,
    stack: &str,
    result: &CheckResult,
) -> Option<i64> {
    let run = NewRun {
        repo_id,
        stack: stack.into(),
        commit: "c1".into(),
        kind: RunKind::Plan,
        reason: None,
        after: Vec::new(),
        plan_run: None,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    };
    let run_id = store.enqueue(&[run]).await.expect("enqueue")[0];
    let check = DriftCheck {
        repo: "infra",
        stack,
        run_id,
        commit: "c1",
        result,
        checked_at: Utc::now(),
    };
    let url = Some(format!("http://tidemark.test/api/v1/runs/{run_id}"));
    store
        .record_drift_check(&check, |previous| {
            decide(previous, &check, url, true, Utc::now())
        })
        .await
        .expect("record")
        .expect("not stale")
        .outbox_id
}

fn sender(store: &Store, url: &str, policy: OutboxPolicy) -> OutboxSender {
    OutboxSender {
        store: store.clone(),
        notifier: SlackNotifier::new(url, fast_policy()).expect("notifier"),
        policy,
        name: "test#outbox".into(),
        wake: Arc::new(tokio::sync::Notify::new()),
        lease: Duration::from_secs(60),
    }
}

async fn outbox_row(store: &Store, id: i64) -> tidemark::store::OutboxRow {
    store
        .outbox()
        .await
        .expect("outbox")
        .into_iter()
        .find(|r| r.id == id)
        .expect("row")
}

async fn drift_queue_and_outbox(store: Store) {
    let repo_id = store
        .upsert_repo("infra", "file:///x.git", "main", None)
        .await
        .expect("repo");
    store
        .sync_stacks(repo_id, "c1", &[stack("app"), stack("gone")])
        .await
        .expect("sync");
    store
        .sync_stacks(repo_id, "c2", &[stack("app")])
        .await
        .expect("sync");

    // Drift checks: at the head commit, one in flight per stack, one per tick.
    let tick = Utc::now();
    let first = store
        .enqueue_drift("infra", "app", tick, "tick")
        .await
        .expect("enqueue")
        .expect("queued");
    assert_eq!(store.run(first).await.expect("run").commit, "c2");
    assert_eq!(
        store
            .enqueue_drift("infra", "app", Utc::now(), "again")
            .await
            .expect("enqueue"),
        None,
        "one is queued already"
    );
    assert_eq!(
        store
            .enqueue_drift("infra", "gone", Utc::now(), "x")
            .await
            .expect("enqueue"),
        None,
        "removed stacks are not checked"
    );
    let claimed = store
        .claim("w", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("the drift run");
    assert_eq!((claimed.id, claimed.kind), (first, RunKind::Drift));
    let done = RunOutcome {
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        summary: None,
    };
    assert!(store.finish(first, "w", &done).await.expect("finish"));
    assert_eq!(
        store
            .enqueue_drift("infra", "app", tick, "tick")
            .await
            .expect("enqueue"),
        None,
        "another instance's check of the same tick"
    );
    let stacks = store.drift_stacks().await.expect("drift stacks");
    assert_eq!(stacks.len(), 1);
    assert!(stacks[0].last_check.is_some_and(|t| t >= tick));
    let next = store
        .enqueue_drift("infra", "app", Utc::now(), "next tick")
        .await
        .expect("enqueue")
        .expect("the next tick's check");
    store
        .claim("w", Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(store.finish(next, "w", &done).await.expect("finish"));

    // A message answered 429 with Retry-After: 1, then 200: it arrives once and is sent.
    let message = record(&store, repo_id, "app", &drifted("null_resource.a"))
        .await
        .expect("a message");
    let (url, rx) = receiver(&[Answer::RateLimited { retry_after: 1 }, Answer::Ok]).await;
    let limited = sender(&store, &url, OutboxPolicy::default());
    assert!(limited.step().await.expect("step"));
    assert!(!limited.step().await.expect("step"), "nothing else is due");
    {
        let rx = rx.lock().expect("lock");
        assert_eq!(rx.requests.len(), 2);
        let accepted: Vec<&Value> = rx.requests.iter().filter(|r| r.2).map(|r| &r.0).collect();
        assert_eq!(accepted.len(), 1, "the message arrived once");
        assert!(
            accepted[0]["blocks"]
                .to_string()
                .contains("null_resource.a")
        );
    }
    let row = outbox_row(&store, message).await;
    assert_eq!((row.status.as_str(), row.attempts), ("sent", 2));
    assert!(row.sent_at.is_some());

    // The same drift again: no message. Another drift: one, to a receiver that is down.
    assert_eq!(
        record(&store, repo_id, "app", &drifted("null_resource.a")).await,
        None
    );
    let changed = record(&store, repo_id, "app", &drifted("null_resource.b"))
        .await
        .expect("a changed message");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let down_url = format!("http://127.0.0.1:{port}/services/T000/B000/token");
    let patient = OutboxPolicy {
        base: Duration::ZERO,
        max: Duration::ZERO,
        give_up_after: Duration::from_secs(3600),
    };
    let down = sender(&store, &down_url, patient);
    assert!(down.step().await.expect("step"));
    let row = outbox_row(&store, changed).await;
    assert_eq!(
        (row.status.as_str(), row.kind.as_str()),
        ("pending", "changed")
    );
    assert_eq!(row.attempts, 3);
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("Connection refused") && !e.contains("token")),
        "{:?}",
        row.last_error
    );
    // It comes back: the stored message is delivered on the next step.
    let (_, rx) = receiver_on(port, &[Answer::Ok]).await;
    assert!(down.step().await.expect("step"));
    assert_eq!(outbox_row(&store, changed).await.status, "sent");
    {
        let rx = rx.lock().expect("lock");
        assert_eq!(rx.requests.len(), 1);
        assert!(
            rx.requests[0].0["text"]
                .as_str()
                .is_some_and(|t| t.contains("Drift changed"))
        );
    }

    // A claim is a lease: nobody else takes the message until it ends, and a sender whose
    // lease ran out cannot record over the new claimer.
    let resolved = record(&store, repo_id, "app", &CheckResult::InSync)
        .await
        .expect("a resolved message");
    let now = Utc::now();
    let lease = Duration::from_secs(60);
    let mine = store
        .outbox_claim("a", now, lease)
        .await
        .expect("claim")
        .expect("due");
    assert_eq!(mine.id, Some(resolved));
    assert!(
        store
            .outbox_claim("b", now, lease)
            .await
            .expect("claim")
            .is_none()
    );
    let later = now + chrono::Duration::seconds(61);
    let theirs = store
        .outbox_claim("b", later, lease)
        .await
        .expect("claim")
        .expect("the lease ran out");
    assert_eq!(theirs.id, Some(resolved));
    assert!(!store.outbox_record(&mine, "a").await.expect("record"));
    assert!(store.outbox_record(&theirs, "b").await.expect("record"));
    store.close().await;
}

#[tokio::test]
async fn drift_queue_and_outbox_on_sqlite() {
    let db = TestDb::sqlite();
    drift_queue_and_outbox(Store::open(&db.url).await.expect("store")).await;
}

#[tokio::test]
async fn drift_queue_and_outbox_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        drift_queue_and_outbox(Store::open(&db.url).await.expect("store")).await;
    }
}

/// Four senders claiming at once take every message exactly once.
async fn concurrent_claims(store: Store) {
    let repo_id = store
        .upsert_repo("infra", "file:///x.git", "main", None)
        .await
        .expect("repo");
    let stacks: Vec<StackRecord> = (0..24).map(|i| stack(&format!("s{i}"))).collect();
    store
        .sync_stacks(repo_id, "c1", &stacks)
        .await
        .expect("sync");
    let mut queued = HashSet::new();
    for s in &stacks {
        queued.insert(
            record(&store, repo_id, &s.path, &drifted("x.y"))
                .await
                .expect("message"),
        );
    }
    let claimers: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let name = format!("claimer{i}");
                while let Some(d) = store
                    .outbox_claim(&name, Utc::now(), Duration::from_secs(60))
                    .await
                    .expect("claim")
                {
                    ids.push(d.id.expect("id"));
                }
                ids
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for c in claimers {
        claimed.extend(c.await.expect("claimer"));
    }
    let unique: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(unique.len(), claimed.len(), "a message was claimed twice");
    assert_eq!(unique, queued);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_claim_each_message_once_on_sqlite() {
    let db = TestDb::sqlite();
    concurrent_claims(Store::open(&db.url).await.expect("store")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_claim_each_message_once_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        concurrent_claims(Store::open(&db.url).await.expect("store")).await;
    }
}

fn tidemark(args: &[&str], cwd: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .current_dir(cwd)
        .env_remove("TIDEMARK_DATABASE_URL")
        .env_remove("TIDEMARK_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run tidemark")
}

#[tokio::test]
async fn drift_status_prints_each_stack_in_the_documented_shape() {
    let db = TestDb::sqlite();
    let store = Store::open(&db.url).await.expect("store");
    let repo_id = store
        .upsert_repo("infra", "file:///x.git", "main", None)
        .await
        .expect("repo");
    store
        .sync_stacks(repo_id, "c1", &[stack("stacks/app"), stack("stacks/net")])
        .await
        .expect("sync");
    record(
        &store,
        repo_id,
        "stacks/app",
        &drifted("null_resource.this"),
    )
    .await;
    record(&store, repo_id, "stacks/net", &CheckResult::InSync).await;
    store.close().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("TIDEMARK_DATABASE_URL", db.url.as_str())];
    let out = tidemark(&["drift", "status", "--format", "json"], dir.path(), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&json), ["stacks"]);
    let stacks = json["stacks"].as_array().expect("stacks");
    assert_eq!(stacks.len(), 2);
    assert_eq!(
        keys(&stacks[0]),
        [
            "cause",
            "checked_at",
            "error",
            "fingerprint",
            "last_check_run",
            "repo",
            "resources",
            "since",
            "stack",
            "state"
        ]
    );
    let app = &stacks[0];
    assert_eq!(
        (app["repo"].as_str(), app["stack"].as_str()),
        (Some("infra"), Some("stacks/app"))
    );
    assert_eq!(app["state"], "drifted");
    assert_eq!(app["cause"], "changed_outside_git");
    assert_eq!(app["fingerprint"].as_str().map(str::len), Some(64));
    assert!(
        app["since"]
            .as_str()
            .is_some_and(|s| s.parse::<chrono::DateTime<Utc>>().is_ok())
    );
    assert_eq!(
        app["resources"],
        serde_json::json!([{"address": "null_resource.this", "actions": ["delete", "create"]}])
    );
    let net = &stacks[1];
    assert_eq!(
        (net["state"].as_str(), &net["fingerprint"]),
        (Some("in_sync"), &Value::Null)
    );
    assert_eq!(net["resources"], serde_json::json!([]));

    let text = tidemark(&["drift", "status"], dir.path(), &env);
    let text = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("repo"), "{text}");
    assert!(
        lines[1].starts_with("infra")
            && lines[1].contains("stacks/app")
            && lines[1].contains("drifted"),
        "{text}"
    );
    assert!(
        lines[2].contains("stacks/net") && lines[2].contains("in_sync"),
        "{text}"
    );
}

#[test]
fn drift_check_plans_a_checkout_and_exits_by_what_it_found() {
    // `synced` keeps its state outside the repository (a local backend at an absolute path,
    // hence `--sandbox none`) and was applied from another copy; `fresh` was never applied.
    let state_dir = tempfile::tempdir().expect("tempdir");
    let state = state_dir.path().join("terraform.tfstate");
    let applied = tempfile::tempdir().expect("tempdir");
    std::fs::write(applied.path().join("main.tf"), shared_state_stack(&state)).expect("write");
    terraform(applied.path(), &["init", "-no-color", "-input=false"]);
    terraform(
        applied.path(),
        &["apply", "-auto-approve", "-no-color", "-input=false"],
    );
    let git = GitFixture::new();
    git.write("stacks/synced/main.tf", &shared_state_stack(&state))
        .write(
            "stacks/fresh/main.tf",
            &shared_state_stack(&state_dir.path().join("fresh.tfstate")),
        );
    git.commit("two stacks");
    let runners = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        runners.path().join("terraform.hcl"),
        Toolchain::get().runner_override(),
    )
    .expect("write runner");
    let work = git.work();
    let base = [
        "drift",
        "check",
        "--repo",
        work.to_str().expect("utf-8"),
        "--sandbox",
        "none",
        "--runners-dir",
        runners.path().to_str().expect("utf-8"),
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        tidemark(&args, runners.path(), &[])
    };

    // Both plans at once; the report keeps discovery order.
    let out = run(&["--format", "json", "--parallel", "2"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["commit"], git.head());
    let order: Vec<&str> = json["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .filter_map(|s| s["stack"].as_str())
        .collect();
    assert_eq!(order, ["stacks/fresh", "stacks/synced"]);
    let by_stack = |name: &str| {
        json["stacks"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["stack"] == name))
            .cloned()
            .expect("stack in report")
    };
    let fresh = by_stack("stacks/fresh");
    assert_eq!(fresh["state"], "drifted");
    assert_eq!(
        fresh["resources"],
        serde_json::json!([
            {"address": "null_resource.other", "actions": ["create"]},
            {"address": "null_resource.this", "actions": ["create"]}
        ])
    );
    assert_eq!(fresh["outputs"], serde_json::json!(["value"]));
    assert_eq!(fresh["fingerprint"].as_str().map(str::len), Some(64));
    let synced = by_stack("stacks/synced");
    assert_eq!(
        (synced["state"].as_str(), &synced["resources"]),
        (Some("in_sync"), &serde_json::json!([]))
    );

    let out = run(&["--stack", "stacks/synced"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "stacks/synced: in_sync\n"
    );

    let out = run(&[
        "--stack",
        "stacks/missing",
        "--stack",
        "stacks/fresh",
        "--parallel",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "an error wins over drift");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stacks/missing: error"), "{text}");
    assert!(text.contains("is not a directory at this commit"), "{text}");
    assert!(text.contains("stacks/fresh: drifted"), "{text}");
}

/// Instances reaching the same tick at once queue one check between them.
async fn racing_ticks(store: Store) {
    let repo_id = store
        .upsert_repo("infra", "file:///x.git", "main", None)
        .await
        .expect("repo");
    store
        .sync_stacks(repo_id, "c1", &[stack("app")])
        .await
        .expect("sync");
    let tick = Utc::now();
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .enqueue_drift("infra", "app", tick, &format!("instance {i}"))
                    .await
                    .expect("enqueue")
            })
        })
        .collect();
    let mut queued = Vec::new();
    for racer in racers {
        queued.extend(racer.await.expect("racer"));
    }
    assert_eq!(queued.len(), 1, "{queued:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_instances_queue_one_check_per_tick_on_sqlite() {
    let db = TestDb::sqlite();
    racing_ticks(Store::open(&db.url).await.expect("store")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_instances_queue_one_check_per_tick_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        racing_ticks(Store::open(&db.url).await.expect("store")).await;
    }
}

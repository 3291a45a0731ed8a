//! The worker driven one step at a time (no sleeping): dependency order, one run per stack,
//! and a dead worker's run taken back by recovery at an explicit clock, then retried before the
//! runs that waited for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidemark::crypto::PlanKey;
use tidemark::engine::{Worker, WorkerContext};
use tidemark::runner::SandboxMode;
use tidemark::store::{NewRun, RunKind, RunStatus, Store};
use tokio_util::sync::CancellationToken;

use crate::support::{GitFixture, TestDb, noop_runners};

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn steps_follow_dependencies_locks_and_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    for stack in ["a", "b", "c"] {
        git.write(
            &format!("stacks/{stack}/main.tf"),
            "output \"x\" { value = 1 }\n",
        );
    }
    let commit = git.commit_and_push("three stacks");
    let db = TestDb::sqlite();
    let store = Store::open(&db.url).await.expect("store");
    let repo = store
        .upsert_repo("infra", &git.url(), "main", None)
        .await
        .expect("repo");
    let run = |stack: &str, after: Vec<i64>| NewRun {
        repo_id: repo,
        stack: format!("stacks/{stack}"),
        commit: commit.clone(),
        kind: RunKind::Plan,
        reason: None,
        after,
        plan_run: None,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    };
    let [a] = store.enqueue(&[run("a", vec![])]).await.expect("enqueue")[..] else {
        panic!("one id")
    };
    let ids = store
        .enqueue(&[run("b", vec![a]), run("c", vec![])])
        .await
        .expect("enqueue");
    let (b, c) = (ids[0], ids[1]);
    let worker = Worker {
        name: "here#0".into(),
        ctx: Arc::new(WorkerContext {
            provider_cache: None,
            store: store.clone(),
            exe: env!("CARGO_BIN_EXE_tidemark").into(),
            runners: noop_runners(dir.path()),
            sandbox: SandboxMode::None,
            key: PlanKey::generate(),
            workspaces: dir.path().join("workspaces"),
            mirrors: HashMap::from([("infra".to_string(), git.remote())]),
            nudges: Default::default(),
            lease: LEASE,
            work: Default::default(),
            grace: Duration::from_secs(1),
            policies: Default::default(),
            drift: None,
            variables: Vec::new(),
            indexes: Default::default(),
            pr_refresh: Default::default(),
        }),
    };
    let shutdown = CancellationToken::new();
    let status = |id: i64| {
        let store = store.clone();
        async move { store.run(id).await.expect("run").status }
    };

    // Another instance claims a, then dies holding it.
    let held = store
        .claim("dead#0", LEASE)
        .await
        .expect("claim")
        .expect("a run");
    assert_eq!(held.id, a);
    // b waits for a; c is free.
    assert!(worker.step(&shutdown).await.expect("step"));
    assert_eq!(status(c).await, RunStatus::Succeeded);
    assert_eq!(status(b).await, RunStatus::Queued);
    // Nothing else can run: a is held, b waits for it.
    assert!(!worker.step(&shutdown).await.expect("step"));

    // The lease runs out (an explicit clock, no sleeping): a is interrupted and retried, and b
    // now waits for the retry.
    let later = chrono::Utc::now() + chrono::Duration::from_std(LEASE * 2).expect("duration");
    let recovered = store.recover(later, None).await.expect("recover");
    assert_eq!(recovered.requeued, vec![a]);
    let retry = recovered.retries[0];
    assert_eq!(status(a).await, RunStatus::Interrupted);
    // The dead worker can no longer finish or renew what it held.
    assert!(
        !store
            .heartbeat(a, "dead#0", LEASE)
            .await
            .expect("heartbeat")
    );

    assert!(worker.step(&shutdown).await.expect("step"));
    assert_eq!(status(retry).await, RunStatus::Succeeded);
    assert!(worker.step(&shutdown).await.expect("step"));
    assert_eq!(status(b).await, RunStatus::Succeeded);
    let b_run = store.run(b).await.expect("run");
    let retry_run = store.run(retry).await.expect("run");
    assert!(
        b_run.started_at >= retry_run.finished_at,
        "{b_run:#?} {retry_run:#?}"
    );
    assert!(!worker.step(&shutdown).await.expect("step"));
}

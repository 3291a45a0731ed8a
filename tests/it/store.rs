//! The store's story, told once and run against SQLite always and PostgreSQL when
//! `TIDEMARK_TEST_POSTGRES_URL` is set.

use std::time::Duration;

use tidemark::store::{NewRun, RunFilter, RunKind, RunOutcome, RunStatus, StackRecord, Store};

use crate::support::TestDb;

const LEASE: Duration = Duration::from_secs(60);

fn plan(repo_id: i64, stack: &str, commit: &str, after: Vec<i64>) -> NewRun {
    NewRun {
        repo_id,
        stack: stack.into(),
        commit: commit.into(),
        kind: RunKind::Plan,
        reason: None,
        after,
        plan_run: None,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    }
}

async fn story(store: Store) {
    assert_eq!(
        store.migrate().await.expect("migrate again"),
        0,
        "migrations are idempotent"
    );
    let repo = store
        .upsert_repo("infra", "file:///x.git", "main", None)
        .await
        .expect("repo");
    assert_eq!(
        store
            .upsert_repo("infra", "file:///y.git", "main", None)
            .await
            .expect("repo again"),
        repo
    );
    assert_eq!(
        store
            .last_processed_commit(repo, "main")
            .await
            .expect("last"),
        None
    );

    // Fetch health.
    store
        .record_fetch(
            repo,
            Some("git fetch from file:///y.git failed: no such repo"),
        )
        .await
        .expect("err");
    let row = &store.repos().await.expect("repos")[0];
    assert_eq!(row.url, "file:///y.git");
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no such repo")
    );
    store.record_fetch(repo, None).await.expect("ok");
    assert_eq!(store.repos().await.expect("repos")[0].last_error, None);

    // Stacks are synced per commit; vanished ones are kept as removed.
    let rec = |p: &str| StackRecord {
        path: p.into(),
        name: p.into(),
        runner: None,
        auto_apply: false,
        tags: Vec::new(),
        drift_schedule: None,
        drift_remediation: Default::default(),
        environment: None,
        depends_on: Vec::new(),
    };
    store
        .sync_stacks(repo, "c1", &[rec("a"), rec("b")])
        .await
        .expect("sync");
    store
        .sync_stacks(repo, "c2", &[rec("a")])
        .await
        .expect("sync");
    let stacks = store.stacks(Some("infra")).await.expect("stacks");
    assert_eq!(
        stacks
            .iter()
            .map(|s| (s.path.as_str(), s.removed))
            .collect::<Vec<_>>(),
        vec![("a", false), ("b", true)]
    );

    // Queue: b waits for a (dependency order); a second plan of a waits for the stack lock.
    let ids = store
        .enqueue(&[plan(repo, "a", "c1", vec![])])
        .await
        .expect("enqueue");
    let a1 = ids[0];
    let ids = store
        .enqueue(&[plan(repo, "b", "c1", vec![a1])])
        .await
        .expect("enqueue");
    let b1 = ids[0];
    let first = store
        .claim("w1", LEASE)
        .await
        .expect("claim")
        .expect("a run");
    assert_eq!(first.id, a1);
    assert_eq!(first.status, RunStatus::Running);
    assert!(
        store.claim("w2", LEASE).await.expect("claim").is_none(),
        "b waits for its upstream a"
    );
    assert!(store.heartbeat(a1, "w1", LEASE).await.expect("hb"));
    assert!(
        !store.heartbeat(a1, "w2", LEASE).await.expect("hb"),
        "only the holder renews"
    );
    store
        .append_logs(
            a1,
            &[("plan".into(), "stdout".into(), "Plan: 1 to add".into())],
        )
        .await
        .expect("logs");
    let outcome = RunOutcome {
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        summary: Some(
            serde_json::json!({"summary": {"add": 1, "change": 0, "destroy": 0, "replace": 0}}),
        ),
    };
    assert!(
        !store.finish(a1, "w2", &outcome).await.expect("finish"),
        "only the holder finishes"
    );
    assert!(store.finish(a1, "w1", &outcome).await.expect("finish"));
    let next = store
        .claim("w2", LEASE)
        .await
        .expect("claim")
        .expect("b now");
    assert_eq!(next.id, b1);

    // A newer commit supersedes queued plans of older commits for the same stack.
    let old = store
        .enqueue(&[plan(repo, "a", "c2", vec![])])
        .await
        .expect("enqueue")[0];
    let new = store
        .enqueue(&[plan(repo, "a", "c3", vec![])])
        .await
        .expect("enqueue")[0];
    assert_eq!(
        store.run(old).await.expect("run").status,
        RunStatus::Superseded
    );
    assert_eq!(store.run(new).await.expect("run").status, RunStatus::Queued);

    // Recovery: an expired plan goes back to the queue; an expired apply is interrupted.
    let claimed = store
        .claim("w3", Duration::from_millis(1))
        .await
        .expect("claim")
        .expect("a@c3");
    assert_eq!(claimed.id, new);
    let apply = store
        .enqueue(&[NewRun {
            kind: RunKind::Apply,
            ..plan(repo, "c", "c3", vec![])
        }])
        .await
        .expect("enqueue")[0];
    assert_eq!(
        store
            .claim("w4", Duration::from_millis(1))
            .await
            .expect("claim")
            .map(|r| r.id),
        Some(apply)
    );
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    let recovered = store.recover(later, None).await.expect("recover");
    assert_eq!(recovered.requeued, vec![new]);
    assert_eq!(recovered.interrupted, vec![apply]);
    assert_eq!(
        store.run(new).await.expect("run").status,
        RunStatus::Interrupted
    );
    let retry = recovered.retries[0];
    let retried = store.run(retry).await.expect("retry");
    assert_eq!(
        (
            retried.status,
            retried.stack.as_str(),
            retried.commit.as_str()
        ),
        (RunStatus::Queued, "a", "c3")
    );
    assert_eq!(
        retried.reason.as_deref(),
        Some(format!("retry of run {new}").as_str())
    );
    assert_eq!(
        store.run(apply).await.expect("run").status,
        RunStatus::Interrupted
    );

    // The interrupted apply left its stack locked: nothing runs there until it is unlocked.
    let locks = store.locks().await.expect("locks");
    assert!(
        locks
            .iter()
            .any(|l| l.stack == "c" && l.kind == "lock" && l.run_id == Some(apply)),
        "{locks:?}"
    );
    let waiting = store
        .enqueue(&[plan(repo, "c", "c4", vec![])])
        .await
        .expect("enqueue")[0];
    let claimed = store.claim("w5", LEASE).await.expect("claim");
    assert_eq!(
        claimed.as_ref().map(|r| r.id),
        Some(retry),
        "the locked stack c is skipped"
    );
    assert!(
        store.claim("w6", LEASE).await.expect("claim").is_none(),
        "c stays locked"
    );
    assert_eq!(store.unlock(None, "c").await.expect("unlock"), 1);
    assert_eq!(
        store.claim("w6", LEASE).await.expect("claim").map(|r| r.id),
        Some(waiting)
    );

    // Listing: newest first, filtered, with summaries.
    let runs = store
        .runs(&RunFilter {
            repo: Some("infra".into()),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.first().map(|r| r.id), Some(waiting));
    let done = store
        .runs(&RunFilter {
            status: Some(RunStatus::Succeeded),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].change_summary().expect("summary").add, 1);
    assert_eq!(
        store.logs(a1).await.expect("logs")[0].text,
        "Plan: 1 to add"
    );
}

#[tokio::test]
async fn store_story_on_sqlite() {
    let db = TestDb::sqlite();
    story(Store::open(&db.url).await.expect("open sqlite")).await;
}

#[tokio::test]
async fn store_story_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    story(Store::open(&db.url).await.expect("open postgres")).await;
}

#[tokio::test]
async fn two_claimers_never_hold_one_stack_at_once_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = Store::open(&db.url).await.expect("open");
    let repo = store
        .upsert_repo("r", "file:///r", "main", None)
        .await
        .expect("repo");
    let runs: Vec<NewRun> = (0..20)
        .map(|i| NewRun {
            kind: RunKind::Drift,
            ..plan(repo, &format!("s{}", i % 5), &format!("c{i}"), vec![])
        })
        .collect();
    store.enqueue(&runs).await.expect("enqueue");
    let mut handles = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store.claim(&format!("w{w}"), LEASE).await.expect("claim")
        }));
    }
    let mut stacks: Vec<String> = Vec::new();
    for handle in handles {
        if let Some(run) = handle.await.expect("join") {
            stacks.push(run.stack);
        }
    }
    let mut unique = stacks.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        stacks.len(),
        "one running run per stack: {stacks:?}"
    );
}

/// A repository's `max_concurrency` caps its running runs; other repositories are not held up.
async fn repo_concurrency(store: Store) {
    let capped = store
        .upsert_repo("capped", "file:///c", "main", Some(1))
        .await
        .expect("repo");
    let free = store
        .upsert_repo("free", "file:///f", "main", None)
        .await
        .expect("repo");
    let ids = store
        .enqueue(&[
            plan(capped, "a", "c1", vec![]),
            plan(capped, "b", "c1", vec![]),
            plan(free, "x", "c1", vec![]),
        ])
        .await
        .expect("enqueue");
    let first = store.claim("w1", LEASE).await.expect("claim").expect("a");
    assert_eq!(first.id, ids[0]);
    let second = store.claim("w2", LEASE).await.expect("claim").expect("x");
    assert_eq!(second.id, ids[2], "capped's b waits; free's x runs");
    assert!(store.claim("w3", LEASE).await.expect("claim").is_none());
    let done = RunOutcome {
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        summary: None,
    };
    assert!(store.finish(first.id, "w1", &done).await.expect("finish"));
    assert_eq!(
        store.claim("w3", LEASE).await.expect("claim").map(|r| r.id),
        Some(ids[1])
    );
}

#[tokio::test]
async fn repo_concurrency_on_sqlite() {
    let db = TestDb::sqlite();
    repo_concurrency(Store::open(&db.url).await.expect("open sqlite")).await;
}

#[tokio::test]
async fn repo_concurrency_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    repo_concurrency(Store::open(&db.url).await.expect("open postgres")).await;
}

/// Several processes opening a new SQLite database at once (the service and a CLI command)
/// take turns migrating it: every one opens it, none fails with "table already exists".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_new_sqlite_database_all_migrate_it() {
    for round in 0..5 {
        let db = TestDb::sqlite();
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url.clone();
                tokio::spawn(async move { Store::open(&url).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            if let Err(err) = open.await.expect("join") {
                panic!("round {round}: {err:#}");
            }
        }
        let store = Store::open(&db.url).await.expect("open");
        assert!(
            store
                .runs(&RunFilter::default())
                .await
                .expect("runs")
                .is_empty()
        );
    }
}

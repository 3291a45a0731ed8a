//! The retention sweep, against SQLite always and PostgreSQL when it is reachable: old runs,
//! log lines and stored plans go; each stack's newest run of each kind, a plan a kept apply was
//! made from, and anything queued stay.

use std::time::Duration;

use chrono::Utc;
use tidemark::store::{
    Ages, NewRun, RunFilter, RunKind, RunOutcome, RunStatus, StackRecord, Store, StoredArtifact,
    Swept,
};

use crate::support::TestDb;

const DAY: Duration = Duration::from_secs(86_400);

fn new_run(repo_id: i64, stack: &str, kind: RunKind, plan_run: Option<i64>) -> NewRun {
    NewRun {
        repo_id,
        stack: stack.into(),
        commit: "c1".into(),
        kind,
        reason: None,
        after: Vec::new(),
        plan_run,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    }
}

/// Queues one run, runs it to success with a log line and (for plans) a stored plan.
async fn finished(store: &Store, run: NewRun) -> i64 {
    let kind = run.kind;
    let id = store.enqueue(&[run]).await.expect("enqueue")[0];
    let claimed = store.claim("w", DAY).await.expect("claim").expect("a run");
    assert_eq!(claimed.id, id);
    store
        .append_logs(
            id,
            &[("plan".into(), "stdout".into(), format!("line of {id}"))],
        )
        .await
        .expect("log");
    if kind == RunKind::Plan {
        store
            .save_artifact(&StoredArtifact {
                run_id: id,
                digest: format!("d{id}"),
                binding: "b".into(),
                plan_encrypted: vec![1, 2, 3],
                plan_json: b"{}".to_vec(),
                created_at: Utc::now(),
                state_serial: None,
                state_lineage: None,
            })
            .await
            .expect("artifact");
    }
    let outcome = RunOutcome {
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        summary: None,
    };
    assert!(store.finish(id, "w", &outcome).await.expect("finish"));
    id
}

async fn ids(store: &Store) -> Vec<i64> {
    let mut ids: Vec<i64> = store
        .runs(&RunFilter {
            limit: 100,
            ..RunFilter::default()
        })
        .await
        .expect("runs")
        .iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

async fn story(store: Store) {
    let repo = store
        .upsert_repo("infra", "file:///x.git", "main", None)
        .await
        .expect("repo");
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
    let p1 = finished(&store, new_run(repo, "a", RunKind::Plan, None)).await;
    let p2 = finished(&store, new_run(repo, "a", RunKind::Plan, None)).await;
    let a1 = finished(&store, new_run(repo, "a", RunKind::Apply, Some(p2))).await;
    let p3 = finished(&store, new_run(repo, "a", RunKind::Plan, None)).await;
    let q1 = finished(&store, new_run(repo, "b", RunKind::Plan, None)).await;
    let q2 = store
        .enqueue(&[new_run(repo, "b", RunKind::Plan, None)])
        .await
        .expect("queued")[0];
    assert!(store.first_delivery("delivery-1").await.expect("delivery"));

    let ages = Ages {
        runs: Some(2 * DAY),
        logs: Some(DAY),
        artifacts: Some(DAY),
    };
    // Nothing is old yet.
    let swept = store.sweep(ages, Utc::now()).await.expect("sweep now");
    assert_eq!(swept, Swept::default());
    assert_eq!(ids(&store).await, vec![p1, p2, a1, p3, q1, q2]);

    // A day and a half on: logs and plans of runs that are not their stack's newest go, the
    // runs stay.
    let later = Utc::now() + chrono::Duration::hours(36);
    let swept = store.sweep(ages, later).await.expect("sweep logs");
    assert_eq!(
        (swept.runs, swept.log_lines, swept.artifacts),
        (0, 3, 3),
        "{swept:?}"
    );
    for gone in [p1, p2, q1] {
        assert!(
            store.logs(gone).await.expect("logs").is_empty(),
            "run {gone}"
        );
        assert!(
            store.artifact(gone).await.expect("artifact").is_none(),
            "run {gone}"
        );
    }
    assert_eq!(
        store.logs(p3).await.expect("logs").len(),
        1,
        "the newest plan keeps its log"
    );
    assert!(
        store.artifact(p3).await.expect("artifact").is_some(),
        "and its plan"
    );
    assert_eq!(
        store.logs(a1).await.expect("logs").len(),
        1,
        "the newest apply its log"
    );

    // Three days on: old runs go, but not the plan the kept apply was made from, the newest
    // of each kind, or the queued run.
    let later = Utc::now() + chrono::Duration::hours(72);
    let swept = store.sweep(ages, later).await.expect("sweep runs");
    assert_eq!(swept.runs, 2, "{swept:?}");
    assert_eq!(ids(&store).await, vec![p2, a1, p3, q2]);
    assert_eq!(store.run(a1).await.expect("apply").plan_run_id, Some(p2));

    // A week on, the delivery id is forgotten: the same id is new again.
    let swept = store
        .sweep(Ages::default(), Utc::now() + chrono::Duration::days(8))
        .await
        .expect("sweep deliveries");
    assert_eq!(swept.deliveries, 1);
    assert!(store.first_delivery("delivery-1").await.expect("delivery"));
    // Without ages, nothing else is swept.
    assert_eq!(ids(&store).await, vec![p2, a1, p3, q2]);
}

#[tokio::test]
async fn retention_sweeps_old_history_on_sqlite() {
    let db = TestDb::sqlite();
    story(Store::open(&db.url).await.expect("open sqlite")).await;
}

#[tokio::test]
async fn retention_sweeps_old_history_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    story(Store::open(&db.url).await.expect("open postgres")).await;
}

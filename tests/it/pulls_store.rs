//! The store's side of pull requests, told once and run against SQLite and PostgreSQL: a pull
//! request's runs share the queue with the branch's but supersede only their own, a merge is
//! claimed once, and the run list pages by cursor.

use tidemark::forge::{PrState, PullRequest};
use tidemark::store::{NewRun, RunFilter, RunKind, RunStatus, Store};

use crate::support::TestDb;

fn plan(repo_id: i64, stack: &str, commit: &str, pr: Option<i64>) -> NewRun {
    NewRun {
        repo_id,
        stack: stack.into(),
        commit: commit.into(),
        kind: RunKind::Plan,
        reason: None,
        after: Vec::new(),
        plan_run: None,
        transitive: false,
        pr_number: pr,
        reviewed_run: None,
    }
}

fn pull(number: u64, head: &str, state: PrState) -> PullRequest {
    PullRequest {
        number,
        title: "Add a bucket".into(),
        author: "alice".into(),
        state,
        draft: false,
        head_sha: head.into(),
        head_ref: "feature".into(),
        base_ref: "main".into(),
        base_sha: "b".repeat(40),
        fork: false,
        labels: vec!["prod".into()],
        merge_commit_sha: (state == PrState::Merged).then(|| "m".repeat(40)),
        mergeable: Some(true),
    }
}

async fn story(store: Store) {
    let repo = store
        .upsert_repo("infra", "file:///x.git", "main", None)
        .await
        .expect("repo");
    store
        .upsert_pull_request(repo, &pull(7, "h1", PrState::Open))
        .await
        .expect("upsert");
    let rows = store
        .pull_requests(Some("infra"), Some("open"))
        .await
        .expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.labels(), vec!["prod".to_string()]);

    // A branch plan and a PR plan of one stack: neither supersedes the other.
    let ids = store
        .enqueue(&[
            plan(repo, "stacks/a", "c1", None),
            plan(repo, "stacks/a", "p1", Some(7)),
        ])
        .await
        .expect("enqueue");
    let branch = store.run(ids[0]).await.expect("run");
    let pr = store.run(ids[1]).await.expect("run");
    assert_eq!(
        (branch.status, pr.status),
        (RunStatus::Queued, RunStatus::Queued)
    );
    assert_eq!(pr.pr_number, Some(7));

    // A push: the PR's plans of the old commit are superseded, the branch's are not.
    let ids2 = store
        .enqueue_indexed(&[plan(repo, "stacks/b", "p2", Some(7))])
        .await
        .expect("enqueue");
    let superseded = store
        .supersede_pr_plans(repo, 7, "p2")
        .await
        .expect("supersede");
    assert_eq!(superseded, 1);
    assert_eq!(
        store.run(ids[1]).await.expect("run").status,
        RunStatus::Superseded
    );
    assert_eq!(
        store.run(ids[0]).await.expect("run").status,
        RunStatus::Queued
    );
    assert_eq!(
        store.run(ids2[0]).await.expect("run").status,
        RunStatus::Queued
    );
    store
        .set_pr_planned(repo, 7, "h2", Some("base"), Some("p2"), None)
        .await
        .expect("planned");
    let row = store
        .pull_request(repo, 7)
        .await
        .expect("row")
        .expect("some");
    assert_eq!(row.planned_commit.as_deref(), Some("p2"));
    assert_eq!(store.pr_runs(repo, 7).await.expect("runs").len(), 2);

    // One instance claims the first comment; a failed post gives the claim back.
    assert!(store.claim_pr_comment(repo, 7).await.expect("claim"));
    assert!(!store.claim_pr_comment(repo, 7).await.expect("claimed"));
    store.release_pr_comment(repo, 7).await.expect("release");
    assert!(store.claim_pr_comment(repo, 7).await.expect("claim again"));
    // The comment is remembered by id and digest.
    store
        .set_pr_comment(repo, 7, 41, "abc")
        .await
        .expect("comment");
    assert_eq!(
        store
            .pull_request(repo, 7)
            .await
            .expect("row")
            .expect("some")
            .comment_id,
        Some(41)
    );

    // Merged: claimed exactly once; the stacks its merge applies are known by merge commit.
    store
        .upsert_pull_request(repo, &pull(7, "h2", PrState::Merged))
        .await
        .expect("merged");
    assert!(store.claim_merge(repo, 7).await.expect("claim"));
    assert!(!store.claim_merge(repo, 7).await.expect("claim again"));
    let merge = "m".repeat(40);
    let mut apply = plan(repo, "stacks/b", "p2", Some(7));
    apply.kind = RunKind::Apply;
    apply.plan_run = Some(ids2[0]);
    store.enqueue(&[apply]).await.expect("apply");
    assert_eq!(
        store
            .merge_handled_stacks(repo, &merge)
            .await
            .expect("handled"),
        vec!["stacks/b".to_string()]
    );
    assert!(
        store
            .merge_handled_stacks(repo, "other")
            .await
            .expect("none")
            .is_empty()
    );

    // Closing cancels what is still queued.
    store
        .upsert_pull_request(repo, &pull(8, "h8", PrState::Open))
        .await
        .expect("pr 8");
    let ids8 = store
        .enqueue(&[plan(repo, "stacks/c", "p8", Some(8))])
        .await
        .expect("enqueue");
    assert_eq!(store.cancel_pr_runs(repo, 8).await.expect("cancel"), 1);
    assert_eq!(
        store.run(ids8[0]).await.expect("run").status,
        RunStatus::Cancelled
    );

    // The run list pages by cursor.
    let all = store
        .runs(&RunFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("runs");
    let first = store
        .runs(&RunFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("page 1");
    let second = store
        .runs(&RunFilter {
            limit: 2,
            before: first.last().map(|r| r.id),
            ..Default::default()
        })
        .await
        .expect("page 2");
    let paged: Vec<i64> = first.iter().chain(&second).map(|r| r.id).collect();
    let expected: Vec<i64> = all.iter().take(4).map(|r| r.id).collect();
    assert_eq!(paged, expected);
}

#[tokio::test]
async fn pull_request_store_story_on_sqlite() {
    let db = TestDb::sqlite();
    story(Store::open(&db.url).await.expect("open sqlite")).await;
}

#[tokio::test]
async fn pull_request_store_story_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    story(Store::open(&db.url).await.expect("open postgres")).await;
}

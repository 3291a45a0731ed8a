//! Pull requests end to end, on the real binary with real git and real terraform, against
//! GitHub's OpenAPI description (Prism behind the recording mock): a pull request found by
//! polling alone gets one comment with its plans and a `tidemark/plan` status; a push edits
//! that comment in place; a merge with an approval applies the reviewed plan artifact itself,
//! sets `tidemark/apply`, and the branch does not plan the merge commit again; a fork is not
//! planned; a command from a user without write permission is refused. Every request Tidemark
//! sent passed the OpenAPI validation.

use std::time::{Duration, Instant};

use tidemark::store::{Run, RunKind, RunStatus};

use crate::github_mock::GitHubMock;
use crate::pulls_harness::{MARKER, REPO, Service, config, posts_and_patches, push_pr};
use crate::support::{GitFixture, git, null_stack};

#[tokio::test]
async fn a_pull_request_is_planned_commented_and_applied_on_merge_exactly_as_reviewed() {
    let Some(mock) = GitHubMock::start(REPO).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = GitFixture::new();
    repo.write("stacks/app/main.tf", &null_stack("v1"))
        .write("stacks/other/main.tf", &null_stack("o1"));
    let base = repo.commit_and_push("two stacks");
    let config = config(dir.path(), &repo.url(), &mock.url, "1s");
    let service = Service::start(dir.path(), &config).await;
    service
        .wait(120, "the branch plans", || async {
            let runs = service.runs().await;
            (runs.len() == 2 && runs.iter().all(|r| r.status.is_final())).then_some(())
        })
        .await;

    // A pull request changing one stack, found by polling alone.
    git(&repo.work(), &["checkout", "-q", "-b", "feature"]);
    repo.write("stacks/app/main.tf", &null_stack("v2"));
    let head1 = push_pr(&repo, 1, "app v2");
    mock.open_pr(1, "alice", &head1, &base);
    let opened = Instant::now();
    service
        .wait(120, "tidemark/plan on the first head", || async {
            (mock.status(&head1, "tidemark/plan").as_deref() == Some("success")).then_some(())
        })
        .await;
    let comments = mock.comments(1);
    assert_eq!(comments.len(), 1, "{comments:#?}");
    let body = &comments[0].2;
    assert!(body.starts_with(MARKER), "{body}");
    assert!(body.contains("stacks/app"), "{body}");
    assert!(
        !body.contains("stacks/other"),
        "only the changed stack is planned: {body}"
    );
    eprintln!(
        "first comment and status {:?} after the pull request opened",
        opened.elapsed()
    );
    let pr_runs: Vec<Run> = service
        .runs()
        .await
        .into_iter()
        .filter(|r| r.pr_number == Some(1))
        .collect();
    assert_eq!(pr_runs.len(), 1, "{pr_runs:#?}");
    assert_eq!(
        pr_runs[0].commit, head1,
        "a head that contains its base is its own merge"
    );

    // A push: the same comment is edited, statuses go to the new head.
    repo.write("stacks/app/main.tf", &null_stack("v3"));
    let head2 = push_pr(&repo, 1, "app v3");
    mock.push_pr(1, &head2);
    let pushed = Instant::now();
    assert_eq!(
        service
            .webhook(
                "pull_request",
                &serde_json::json!({
                    "action": "synchronize", "number": 1,
                    "pull_request": { "number": 1 },
                    "repository": { "full_name": REPO }
                })
            )
            .await,
        200
    );
    service
        .wait(120, "tidemark/plan on the pushed head", || async {
            (mock.status(&head2, "tidemark/plan").as_deref() == Some("success")).then_some(())
        })
        .await;
    let webhook_to_status = pushed.elapsed();
    let (posts, patches) = posts_and_patches(&mock, 1);
    let comment_id = mock.comments(1)[0].0;
    assert_eq!(posts, 1, "one comment, never a second");
    assert!(!patches.is_empty());
    assert!(
        patches
            .iter()
            .all(|p| *p == format!("/repos/{REPO}/issues/comments/{comment_id}")),
        "{patches:?}"
    );
    assert_eq!(mock.comments(1).len(), 1);
    // Each post and edit of the comment is counted as a sent notification.
    let written = (posts + patches.len()) as f64;
    let addr = service.addr.parse().expect("the service's address");
    service
        .wait(30, "the comment writes counted in /metrics", || async {
            let scrape = crate::metrics::scrape(addr).await;
            let labels = [("channel", "pr_comment"), ("result", "sent")];
            (crate::metrics::value(&scrape, "tidemark_notifications_total", &labels) >= written)
                .then_some(())
        })
        .await;
    let plan_time = service
        .runs()
        .await
        .into_iter()
        .filter(|r| r.pr_number == Some(1) && r.commit == head2)
        .find_map(|r| (r.finished_at? - r.started_at?).to_std().ok())
        .unwrap_or_default();
    eprintln!(
        "webhook to updated status: {webhook_to_status:?}; the plan run itself: {plan_time:?}; overhead {:?}",
        webhook_to_status.saturating_sub(plan_time)
    );

    // Approved on the pushed head by a writer, then merged.
    mock.permit("bob", "write");
    mock.approve(1, "bob", &head2);
    let reviewed = service
        .runs()
        .await
        .into_iter()
        .find(|r| {
            r.pr_number == Some(1)
                && r.status == RunStatus::Succeeded
                && r.kind == RunKind::Plan
                && r.reviewed_run_id.is_none()
                && r.id > pr_runs[0].id
        })
        .expect("the reviewed plan");
    let reviewed_digest = service
        .store
        .artifact(reviewed.id)
        .await
        .expect("artifact")
        .expect("stored")
        .digest;
    git(&repo.work(), &["checkout", "-q", "main"]);
    git(
        &repo.work(),
        &[
            "merge",
            "-q",
            "--no-ff",
            "feature",
            "-m",
            "Merge pull request #1",
        ],
    );
    // As on GitHub, the pull request is merged when the merge commit reaches the branch.
    let merge = repo.head();
    mock.merge_pr(1, &merge);
    git(&repo.work(), &["push", "-q", "origin", "main"]);
    let apply = service
        .wait(180, "the apply of the reviewed plan", || async {
            service
                .runs()
                .await
                .into_iter()
                .find(|r| r.kind == RunKind::Apply && r.status.is_final())
        })
        .await;
    assert_eq!(apply.status, RunStatus::Succeeded, "{}", service.log());
    assert_eq!(
        apply.plan_run_id,
        Some(reviewed.id),
        "the reviewed artifact itself is applied"
    );
    assert_eq!(apply.stack, "stacks/app");
    assert_eq!(
        service
            .store
            .artifact(reviewed.id)
            .await
            .expect("artifact")
            .expect("stored")
            .digest,
        reviewed_digest
    );
    let versions = service
        .store
        .state_versions("infra", "stacks/app")
        .await
        .expect("versions");
    assert!(!versions.is_empty(), "the apply stored a state version");
    service
        .wait(60, "tidemark/apply on the merge commit", || async {
            (mock.status(&merge, "tidemark/apply").as_deref() == Some("success")).then_some(())
        })
        .await;
    // The branch saw the merge commit and did not plan stacks/app again.
    service
        .wait(60, "the merge commit to be processed", || async {
            let last = service
                .store
                .last_processed_commit(1, "main")
                .await
                .ok()??;
            (last == merge).then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let replanned: Vec<Run> = service
        .runs()
        .await
        .into_iter()
        .filter(|r| r.commit == merge && r.stack == "stacks/app" && r.pr_number.is_none())
        .collect();
    assert!(
        replanned.is_empty(),
        "the merge commit was planned twice: {replanned:#?}"
    );
    let comment = &mock.comments(1)[0].2;
    assert!(comment.contains("apply"), "{comment}");

    // The CLI shows it with the JSON shape.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["prs", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .expect("tidemark prs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let prs: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let pr = &prs["prs"][0];
    for key in ["repo", "number", "head", "state", "comment_id", "stacks"] {
        assert!(pr.get(key).is_some(), "{key} missing in {pr}");
    }
    assert_eq!(pr["state"], "merged");
    assert_eq!(pr["comment_id"], comment_id);
    let stack = &pr["stacks"][0];
    for key in ["stack", "run_id", "status", "summary"] {
        assert!(stack.get(key).is_some(), "{key} missing in {stack}");
    }

    // A pull request that destroys the applied resource: listed, denied by the shipped
    // policy, and the status fails.
    git(&repo.work(), &["checkout", "-q", "-b", "teardown"]);
    repo.write(
        "stacks/app/main.tf",
        "terraform {\n  required_providers {\n    null = { source = \"hashicorp/null\", version = \"2.1.2\" }\n  }\n}\n",
    );
    let teardown = push_pr(&repo, 2, "remove the app's resource");
    mock.open_pr(2, "alice", &teardown, &merge);
    service
        .wait(120, "tidemark/plan on the teardown", || async {
            mock.status(&teardown, "tidemark/plan")
                .filter(|s| s != "pending")
        })
        .await;
    assert_eq!(
        mock.status(&teardown, "tidemark/plan").as_deref(),
        Some("failure")
    );
    let body = &mock.comments(2)[0].2;
    assert!(
        body.contains("destroy `null_resource.this` in `stacks/app`"),
        "{body}"
    );
    assert!(body.contains("#### Policy denials"), "{body}");
    assert_eq!(mock.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn forks_are_not_planned_and_commands_need_write_permission() {
    let Some(mock) = GitHubMock::start(REPO).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = GitFixture::new();
    repo.write("stacks/app/main.tf", &null_stack("v1"));
    let base = repo.commit_and_push("one stack");
    // Webhooks only: no pull-request polling.
    let config = config(dir.path(), &repo.url(), &mock.url, "off");
    let service = Service::start(dir.path(), &config).await;
    git(&repo.work(), &["checkout", "-q", "-b", "fork"]);
    repo.write("stacks/app/main.tf", &null_stack("evil"));
    let head = push_pr(&repo, 2, "from a fork");
    mock.open_pr(2, "mallory", &head, &base);
    mock.with(|s| s.pulls.get_mut(&2).expect("pr").fork = true);
    let opened = serde_json::json!({
        "action": "opened", "number": 2, "pull_request": { "number": 2 },
        "repository": { "full_name": REPO }
    });
    assert_eq!(service.webhook("pull_request", &opened).await, 200);
    service
        .wait(60, "the fork's comment", || async {
            mock.comments(2).first().map(|c| c.2.clone())
        })
        .await;
    let body = &mock.comments(2)[0].2;
    assert!(body.contains("fork"), "{body}");
    assert!(
        service.runs().await.iter().all(|r| r.pr_number != Some(2)),
        "a fork pull request was planned"
    );

    // A forged delivery is refused.
    let forged = reqwest::Client::new()
        .post(format!("http://{}/webhooks/github", service.addr))
        .header("X-GitHub-Event", "pull_request")
        .header("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64)))
        .body(serde_json::to_vec(&opened).expect("json"))
        .send()
        .await
        .expect("send");
    assert_eq!(forged.status().as_u16(), 401);

    // A command from a user with read permission: a reaction and a reply saying why.
    mock.permit("mallory", "read");
    let id = mock.add_comment(2, "mallory", "tidemark apply");
    let comment = serde_json::json!({
        "action": "created",
        "issue": { "number": 2, "pull_request": { "url": "x" } },
        "comment": { "id": id, "user": { "login": "mallory" }, "body": "tidemark apply" },
        "repository": { "full_name": REPO }
    });
    let (status, answer) = service
        .delivery("issue_comment", &comment, "replayed-delivery-1")
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        !answer.contains("replay"),
        "a first delivery is handled: {answer}"
    );
    // The same delivery again (a replay, or GitHub's redelivery) is acknowledged, not handled.
    let (status, answer) = service
        .delivery("issue_comment", &comment, "replayed-delivery-1")
        .await;
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json answer");
    assert_eq!(
        (status, &answer["ignored"]),
        (200, &serde_json::json!("replay"))
    );
    let reply = service
        .wait(60, "the refusal", || async {
            mock.comments(2)
                .iter()
                .find(|c| c.2.contains("write permission"))
                .map(|c| c.2.clone())
        })
        .await;
    assert!(reply.contains("@mallory"), "{reply}");
    assert!(mock.with(|s| s.reactions.iter().any(|(c, r)| *c == id && r == "confused")));
    assert!(
        service
            .runs()
            .await
            .iter()
            .all(|r| r.kind != RunKind::Apply)
    );
    assert_eq!(mock.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_merge_after_the_base_moved_replans_and_applies_only_the_reviewed_change_set() {
    let Some(mock) = GitHubMock::start(REPO).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = GitFixture::new();
    repo.write("stacks/app/main.tf", &null_stack("a1"))
        .write("stacks/db/main.tf", &null_stack("d1"))
        .write("stacks/web/main.tf", &null_stack("w1"));
    let base = repo.commit_and_push("three stacks");
    let config = config(dir.path(), &repo.url(), &mock.url, "1s");
    let service = Service::start(dir.path(), &config).await;
    mock.permit("bob", "write");
    let settled = || async {
        let runs = service.runs().await;
        (!runs.is_empty() && runs.iter().all(|r| r.status.is_final())).then_some(runs)
    };
    service.wait(120, "the branch plans", settled).await;

    // Three pull requests, one per stack, planned and approved against the same base.
    let mut heads = Vec::new();
    for (number, stack, value) in [(1u64, "app", "a2"), (2, "db", "d2"), (3, "web", "w2")] {
        git(
            &repo.work(),
            &["checkout", "-q", "-B", &format!("pr{number}"), &base],
        );
        repo.write(&format!("stacks/{stack}/main.tf"), &null_stack(value));
        let head = push_pr(&repo, number, &format!("{stack} {value}"));
        mock.open_pr(number, "alice", &head, &base);
        heads.push(head);
    }
    for (i, head) in heads.iter().enumerate() {
        service
            .wait(120, "the pull request plans", || async {
                (mock.status(head, "tidemark/plan").as_deref() == Some("success")).then_some(())
            })
            .await;
        mock.approve(i as u64 + 1, "bob", head);
    }

    // The base moves: an unrelated stack (web is untouched by #1), a file of app's stack
    // that changes nothing it plans, and a second resource in db.
    git(&repo.work(), &["checkout", "-q", "main"]);
    repo.write("stacks/app/notes.txt", "inputs change, the plan does not\n")
        .write(
            "stacks/db/extra.tf",
            "resource \"null_resource\" \"extra\" {\n  triggers = { value = \"x\" }\n}\n",
        );
    let moved = repo.commit_and_push("base moves");
    service
        .wait(120, "the base's plans", || async {
            let last = service
                .store
                .last_processed_commit(1, "main")
                .await
                .ok()??;
            let runs = settled().await?;
            (last == moved).then_some(runs)
        })
        .await;

    // Merge all three, one after the other.
    let mut merges = Vec::new();
    for (number, _) in heads.iter().enumerate() {
        let number = number as u64 + 1;
        git(
            &repo.work(),
            &[
                "merge",
                "-q",
                "--no-ff",
                &format!("pr{number}"),
                "-m",
                &format!("Merge pull request #{number}"),
            ],
        );
        let merge = repo.head();
        mock.merge_pr(number, &merge);
        git(&repo.work(), &["push", "-q", "origin", "main"]);
        service
            .wait(180, "the merge to be handled", || async {
                let view =
                    tidemark::engine::pr_views(&service.store, Some("infra"), Some(number as i64))
                        .await
                        .ok()?;
                let stack = view.first()?.stacks.first()?.clone();
                let merge = stack.merge.clone()?;
                let done = !merge.starts_with("re-planning")
                    && stack
                        .apply_status
                        .as_deref()
                        .is_none_or(|s| s == "succeeded" || s == "failed");
                done.then_some(())
            })
            .await;
        merges.push(merge);
    }
    let views = tidemark::engine::pr_views(&service.store, Some("infra"), None)
        .await
        .expect("views");
    let merge_of = |number: i64| {
        let view = views.iter().find(|v| v.number == number).expect("pr");
        view.stacks[0].clone()
    };
    // #1 (app): its inputs changed but its plan did not: re-planned at the merge commit and
    // applied, because the change set is the reviewed one.
    let app = merge_of(1);
    assert!(
        app.merge
            .as_deref()
            .unwrap_or("")
            .contains("re-planned at the merge commit"),
        "{app:?}"
    );
    assert_eq!(
        app.apply_status.as_deref(),
        Some("succeeded"),
        "{app:?}\n{}",
        service.log()
    );
    // #2 (db): the merged code plans a second resource: not applied, and it says so.
    let db = merge_of(2);
    assert!(
        db.merge
            .as_deref()
            .unwrap_or("")
            .contains("differs from the reviewed plan"),
        "{db:?}"
    );
    assert_eq!(db.apply_run_id, None, "{db:?}");
    let comment = &mock.comments(2)[0].2;
    assert!(
        comment.contains("differs from the reviewed plan"),
        "{comment}"
    );
    // #3 (web): the base moved elsewhere only: the reviewed artifact itself is applied.
    let web = merge_of(3);
    assert!(
        web.merge
            .as_deref()
            .unwrap_or("")
            .starts_with("reviewed plan"),
        "{web:?}"
    );
    assert_eq!(web.apply_status.as_deref(), Some("succeeded"), "{web:?}");
    let apply = service
        .runs()
        .await
        .into_iter()
        .find(|r| r.kind == RunKind::Apply && r.stack == "stacks/web")
        .expect("web's apply");
    assert_eq!(apply.plan_run_id, Some(web.run_id));
    assert_eq!(mock.violations(), Vec::<String>::new());
}

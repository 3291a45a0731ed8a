//! Pull-request commands end to end (the real binary, the validating GitHub mock): help,
//! plan of named stacks, apply before the merge, unlock; and atlantis.yaml projects that are
//! planned only when a command names them.

use tidemark::store::{Run, RunKind, RunStatus};

use crate::github_mock::GitHubMock;
use crate::pulls_harness::{REPO, Service, command, config, config_with, push_pr};
use crate::support::{GitFixture, git, null_stack};

#[tokio::test]
async fn writers_run_plan_apply_unlock_and_help_from_comments() {
    let Some(mock) = GitHubMock::start(REPO).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = GitFixture::new();
    repo.write("stacks/app/main.tf", &null_stack("v1"));
    let base = repo.commit_and_push("one stack");
    let config = config_with(
        dir.path(),
        &repo.url(),
        &mock.url,
        "off",
        "apply_before_merge = true",
    );
    let service = Service::start(dir.path(), &config).await;
    git(&repo.work(), &["checkout", "-q", "-b", "change"]);
    repo.write("stacks/app/main.tf", &null_stack("v2"));
    let head = push_pr(&repo, 5, "app v2");
    mock.open_pr(5, "alice", &head, &base);
    mock.permit("bob", "write");
    let opened = serde_json::json!({
        "action": "opened", "number": 5, "pull_request": { "number": 5 },
        "repository": { "full_name": REPO }
    });
    assert_eq!(service.webhook("pull_request", &opened).await, 200);
    service
        .wait(120, "the plan", || async {
            (mock.status(&head, "tidemark/plan").as_deref() == Some("success")).then_some(())
        })
        .await;
    let replies = |needle: &'static str| {
        let mock = &mock;
        move || async move {
            mock.comments(5)
                .iter()
                .find(|c| c.2.contains(needle))
                .map(|c| c.2.clone())
        }
    };

    let help = command(&service, &mock, 5, "bob", "tidemark help").await;
    service
        .wait(60, "the help", replies("`tidemark unlock`"))
        .await;
    assert!(mock.with(|s| s.reactions.iter().any(|(c, r)| *c == help && r == "eyes")));

    let plans = |runs: &[Run]| {
        runs.iter()
            .filter(|r| r.pr_number == Some(5) && r.kind == RunKind::Plan)
            .count()
    };
    let before = plans(&service.runs().await);
    command(&service, &mock, 5, "bob", "tidemark plan -p stacks/app").await;
    service
        .wait(120, "the re-plan", || async {
            let runs = service.runs().await;
            (plans(&runs) == before + 1 && runs.iter().all(|r| r.status.is_final())).then_some(())
        })
        .await;

    // Not approved yet: the apply is refused with the reason; approved: applied.
    command(&service, &mock, 5, "bob", "tidemark apply").await;
    service
        .wait(60, "the refusal", replies("not approved"))
        .await;
    mock.approve(5, "bob", &head);
    command(&service, &mock, 5, "bob", "tidemark apply -p stacks/app").await;
    let apply = service
        .wait(120, "the apply", || async {
            service
                .runs()
                .await
                .into_iter()
                .find(|r| r.kind == RunKind::Apply && r.status.is_final())
        })
        .await;
    assert_eq!(apply.status, RunStatus::Succeeded, "{}", service.log());
    assert_eq!(apply.pr_number, Some(5));

    command(&service, &mock, 5, "bob", "tidemark unlock").await;
    service
        .wait(60, "the unlock reply", replies("was locked"))
        .await;

    // The API and the CLI show the pull request.
    let api: serde_json::Value =
        reqwest::get(format!("http://{}/api/v1/prs/infra/5", service.addr))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
    assert_eq!(api["number"], 5);
    assert_eq!(api["stacks"][0]["stack"], "stacks/app");
    assert_eq!(api["stacks"][0]["apply_status"], "succeeded");
    let missing = reqwest::get(format!("http://{}/api/v1/prs/infra/99", service.addr))
        .await
        .expect("get");
    assert_eq!(missing.status().as_u16(), 404);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["pr", "infra", "5", "--config"])
        .arg(&config)
        .output()
        .expect("tidemark pr");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("infra#5"),
        "{text}"
    );
    assert!(
        !service.log().contains("ghp_test_token"),
        "the token reached the log"
    );
    assert_eq!(mock.violations(), Vec::<String>::new());
}

/// An `atlantis.yaml` project with `autoplan.enabled: false` is not planned by a pull request
/// that changes it, until a command names it.
#[tokio::test]
async fn a_manual_project_is_planned_only_when_a_command_names_it() {
    let Some(mock) = GitHubMock::start(REPO).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = GitFixture::new();
    repo.write(
        "atlantis.yaml",
        "version: 3\nprojects:\n- name: app\n  dir: live/app\n- name: manual\n  dir: live/manual\n  autoplan:\n    enabled: false\n",
    )
    .write("live/app/main.tf", &null_stack("a1"))
    .write("live/manual/main.tf", &null_stack("m1"));
    let base = repo.commit_and_push("atlantis projects");
    let config = config(dir.path(), &repo.url(), &mock.url, "1s");
    let service = Service::start(dir.path(), &config).await;
    git(&repo.work(), &["checkout", "-q", "-b", "both"]);
    repo.write("live/app/main.tf", &null_stack("a2"))
        .write("live/manual/main.tf", &null_stack("m2"));
    let head = push_pr(&repo, 9, "change both");
    mock.open_pr(9, "alice", &head, &base);
    mock.permit("bob", "write");
    service
        .wait(120, "the plan", || async {
            (mock.status(&head, "tidemark/plan").as_deref() == Some("success")).then_some(())
        })
        .await;
    let planned = |runs: Vec<Run>| {
        let mut stacks: Vec<String> = runs
            .into_iter()
            .filter(|r| r.pr_number == Some(9))
            .map(|r| r.stack)
            .collect();
        stacks.sort();
        stacks
    };
    assert_eq!(planned(service.runs().await), vec!["live/app".to_string()]);
    command(&service, &mock, 9, "bob", "tidemark plan -p live/manual").await;
    service
        .wait(120, "the manual plan", || async {
            let runs = service.runs().await;
            let stacks = planned(runs.clone());
            (stacks.contains(&"live/manual".to_string())
                && runs.iter().all(|r| r.status.is_final()))
            .then_some(())
        })
        .await;
    assert_eq!(mock.violations(), Vec::<String>::new());
}

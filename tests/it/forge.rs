//! The GitHub client against GitHub's OpenAPI description (Prism behind the recording mock):
//! every call Tidemark makes is one the real API accepts, conditional listing costs a 304,
//! a rate limit stops further calls until its reset, and an App's token is minted once.

use std::time::Duration;

use tidemark::forge::github::{Auth, GitHub};
use tidemark::forge::{
    CommitStatus, Conditional, Forge, ForgeError, Permission, PrState, Reaction, ReviewState,
    StatusState,
};

use crate::github_mock::GitHubMock;

const REPO: &str = "acme/infra";
const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";

fn client(mock: &GitHubMock) -> GitHub {
    GitHub::new(&mock.url, REPO, Auth::Token("ghp_test".into())).expect("client")
}

#[tokio::test]
async fn every_forge_call_is_one_github_accepts() {
    let Some(mock) = GitHubMock::start(REPO).await else {
        return;
    };
    mock.open_pr(7, "alice", SHA, &"b".repeat(40));
    mock.permit("bob", "write");
    mock.approve(7, "bob", SHA);
    let github = client(&mock);
    let started = std::time::Instant::now();

    let Conditional::Changed { value, etag } = github.open_pull_requests(None).await.expect("list")
    else {
        panic!("first listing is a change");
    };
    assert_eq!(value.len(), 1);
    let pr = &value[0];
    assert_eq!(
        (pr.number, pr.author.as_str(), pr.head_sha.as_str()),
        (7, "alice", SHA)
    );
    assert_eq!(
        (pr.state, pr.fork, pr.base_ref.as_str()),
        (PrState::Open, false, "main")
    );
    assert!(pr.merge_commit_sha.is_none());
    let etag = etag.expect("an etag");
    assert_eq!(
        github.open_pull_requests(Some(&etag)).await.expect("again"),
        Conditional::Unchanged
    );

    let one = github.pull_request(7).await.expect("one");
    assert_eq!(one.number, 7);
    assert!(
        github
            .pull_request_files(7)
            .await
            .expect("files")
            .is_empty()
    );
    let reviews = github.reviews(7).await.expect("reviews");
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        (reviews[0].user.as_str(), reviews[0].state),
        ("bob", ReviewState::Approved)
    );
    assert_eq!(
        github.permission("bob").await.expect("perm"),
        Permission::Write
    );
    assert_eq!(
        github.permission("mallory").await.expect("perm"),
        Permission::None
    );

    let created = github.create_comment(7, "hello").await.expect("create");
    let updated = github
        .update_comment(created.id, "hello again")
        .await
        .expect("update");
    assert_eq!(updated.id, created.id);
    let comments = github.comments(7).await.expect("comments");
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].body, "hello again");
    let long = "x".repeat(65_537);
    assert!(matches!(
        github.update_comment(created.id, &long).await,
        Err(ForgeError::Rejected { status: 422, .. })
    ));

    github
        .set_status(
            SHA,
            &CommitStatus {
                context: "tidemark/plan".into(),
                state: StatusState::Success,
                description: "é".repeat(200),
                target_url: Some("http://127.0.0.1:1/runs/1".into()),
            },
        )
        .await
        .expect("status");
    assert_eq!(
        mock.status(SHA, "tidemark/plan").as_deref(),
        Some("success")
    );
    let description = mock.statuses(SHA)[0]["description"]
        .as_str()
        .expect("text")
        .to_string();
    assert_eq!(description.chars().count(), 140);
    github
        .react(created.id, Reaction::Eyes)
        .await
        .expect("react");
    eprintln!(
        "{} requests through the mock in {:?}",
        mock.requests().len(),
        started.elapsed()
    );
    assert_eq!(mock.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn the_mock_catches_a_request_github_would_refuse() {
    let Some(mock) = GitHubMock::start(REPO).await else {
        return;
    };
    let answer = reqwest::Client::new()
        .post(format!("{}/repos/{REPO}/statuses/{SHA}", mock.url))
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .json(&serde_json::json!({ "state": "bogus", "context": "x" }))
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status().as_u16(), 422);
    let violations = mock.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains("state must be equal to one of the allowed values"),
        "{violations:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_stops_calls_until_its_reset() {
    let Some(mock) = GitHubMock::start(REPO).await else {
        return;
    };
    let github = client(&mock);
    mock.with(|s| s.rate_limit_next = 1);
    let err = github.pull_request(1).await.expect_err("limited");
    let ForgeError::RateLimited { retry_after } = err else {
        panic!("expected a rate limit, got {err:?}");
    };
    assert!(retry_after > Duration::from_secs(30), "{retry_after:?}");
    let sent = mock.requests().len();
    assert!(matches!(
        github.reviews(1).await,
        Err(ForgeError::RateLimited { .. })
    ));
    assert_eq!(
        mock.requests().len(),
        sent,
        "a blocked client sends nothing"
    );
    assert_eq!(mock.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_app_installation_token_is_minted_once_for_many_calls() {
    let Some(mock) = GitHubMock::start(REPO).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("app.pem");
    let status = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let pem = std::fs::read_to_string(&key).expect("key");
    let github = GitHub::new(
        &mock.url,
        REPO,
        Auth::App {
            app_id: 12345,
            private_key_pem: pem,
            installation_id: 678,
        },
    )
    .expect("client");
    mock.open_pr(3, "alice", SHA, &"b".repeat(40));
    for _ in 0..3 {
        github.pull_request(3).await.expect("pull");
    }
    assert_eq!(mock.with(|s| s.token_exchanges), 1);
    let bearer: Vec<_> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(bearer[0], "/app/installations/678/access_tokens");
    assert_eq!(mock.violations(), Vec::<String>::new());
}

/// GitHub's documented webhook payloads (`@octokit/webhooks-examples`) of every event
/// Tidemark reads, as `(event, payload)`.
fn webhook_examples() -> Option<Vec<(String, serde_json::Value)>> {
    let dir = crate::github_mock::mock_dir()?;
    let path = dir.join("node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).expect("examples")).expect("json");
    let mut out = Vec::new();
    for event in all {
        let name = event["name"].as_str().unwrap_or_default().to_string();
        if [
            "pull_request",
            "issue_comment",
            "pull_request_review",
            "push",
        ]
        .contains(&name.as_str())
        {
            for example in event["examples"].as_array().into_iter().flatten() {
                out.push((name.clone(), example.clone()));
            }
        }
    }
    Some(out)
}

#[test]
fn githubs_documented_payloads_parse_into_events() {
    use tidemark::forge::ForgeEvent;
    use tidemark::forge::github::parse_event;
    let Some(examples) = webhook_examples() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no webhook examples"
        );
        return;
    };
    let mut seen = std::collections::BTreeMap::new();
    for (event, payload) in &examples {
        let body = serde_json::to_vec(payload).expect("json");
        let parsed = parse_event(event, &body).unwrap_or_else(|err| panic!("{event}: {err}"));
        let ok = match (event.as_str(), &parsed) {
            (
                "pull_request",
                ForgeEvent::PullRequest {
                    repository,
                    number,
                    action,
                },
            ) => {
                repository == payload["repository"]["full_name"].as_str().unwrap_or("")
                    && *number == payload["number"].as_u64().unwrap_or(0)
                    && action == payload["action"].as_str().unwrap_or("")
            }
            ("pull_request_review", ForgeEvent::Review { number, .. }) => {
                *number == payload["pull_request"]["number"].as_u64().unwrap_or(0)
            }
            ("push", ForgeEvent::Push { git_ref, urls }) => {
                git_ref == payload["ref"].as_str().unwrap_or("") && !urls.is_empty()
            }
            // The examples comment on issues, which are not pull requests.
            ("issue_comment", ForgeEvent::Ignored { .. }) => true,
            _ => false,
        };
        assert!(ok, "{event} parsed as {parsed:?}");
        *seen.entry(event.clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    // A comment on a pull request (the examples' issue, given `pull_request`) is a command.
    let (_, mut comment) = examples
        .iter()
        .find(|(e, p)| e == "issue_comment" && p["action"] == "created")
        .cloned()
        .expect("a created comment");
    comment["issue"]["pull_request"] =
        serde_json::json!({ "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1" });
    let parsed = parse_event(
        "issue_comment",
        &serde_json::to_vec(&comment).expect("json"),
    )
    .expect("parse");
    assert!(
        matches!(parsed, ForgeEvent::Comment { number: 1, .. }),
        "{parsed:?}"
    );
    // The examples have no merged close: derived from a close.
    let (_, mut merged) = examples
        .iter()
        .find(|(e, p)| e == "pull_request" && p["action"] == "closed")
        .cloned()
        .expect("a close");
    merged["pull_request"]["merged"] = serde_json::json!(true);
    merged["pull_request"]["merge_commit_sha"] =
        serde_json::json!("6dcb09b5b57875f334f61aebed695e2e4193db5e");
    let parsed =
        parse_event("pull_request", &serde_json::to_vec(&merged).expect("json")).expect("parse");
    assert!(
        matches!(parsed, ForgeEvent::PullRequest { ref action, .. } if action == "closed"),
        "{parsed:?}"
    );
    eprintln!("{} documented payloads parsed: {seen:?}", examples.len());
}

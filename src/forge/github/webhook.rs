//! GitHub's webhooks: the `X-Hub-Signature-256` check, and the events Tidemark reads turned
//! into the forge's neutral [`ForgeEvent`]s. A webhook only nudges; nothing in a payload is
//! trusted beyond naming what to look at again.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::forge::{Comment, ForgeEvent};

/// Checks GitHub's `sha256=HEX` HMAC of the raw body, in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
    #[serde(default)]
    git_url: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    ref_: String,
    repository: Repository,
}

#[derive(Deserialize)]
struct Numbered {
    number: u64,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: Option<u64>,
    pull_request: Numbered,
    repository: Repository,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct CommentBody {
    id: u64,
    user: User,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    /// Present only when the issue is a pull request.
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IssueCommentEvent {
    action: String,
    issue: Issue,
    comment: CommentBody,
    repository: Repository,
}

#[derive(Deserialize)]
struct ReviewEvent {
    pull_request: Numbered,
    repository: Repository,
}

/// Reads a delivery: `event` is the `X-GitHub-Event` header. An event Tidemark does not act
/// on is `Ignored`; a payload that does not have the event's shape is an error naming it.
pub fn parse_event(event: &str, body: &[u8]) -> Result<ForgeEvent, String> {
    let parse_err =
        |err: serde_json::Error| format!("{event} payload is not what GitHub sends: {err}");
    match event {
        "push" => {
            let push: Push = serde_json::from_slice(body).map_err(parse_err)?;
            let repo = push.repository;
            let urls = [repo.clone_url, repo.ssh_url, repo.git_url, repo.html_url]
                .into_iter()
                .flatten()
                .collect();
            Ok(ForgeEvent::Push {
                urls,
                git_ref: push.ref_,
            })
        }
        "pull_request" => {
            let pr: PullRequestEvent = serde_json::from_slice(body).map_err(parse_err)?;
            Ok(ForgeEvent::PullRequest {
                repository: pr.repository.full_name,
                number: pr.number.unwrap_or(pr.pull_request.number),
                action: pr.action,
            })
        }
        "issue_comment" => {
            let comment: IssueCommentEvent = serde_json::from_slice(body).map_err(parse_err)?;
            if comment.issue.pull_request.is_none() || comment.action != "created" {
                return Ok(ForgeEvent::Ignored {
                    event: format!("issue_comment.{}", comment.action),
                });
            }
            Ok(ForgeEvent::Comment {
                repository: comment.repository.full_name,
                number: comment.issue.number,
                comment: Comment {
                    id: comment.comment.id,
                    author: comment.comment.user.login,
                    body: comment.comment.body.unwrap_or_default(),
                },
            })
        }
        "pull_request_review" => {
            let review: ReviewEvent = serde_json::from_slice(body).map_err(parse_err)?;
            Ok(ForgeEvent::Review {
                repository: review.repository.full_name,
                number: review.pull_request.number,
            })
        }
        other => Ok(ForgeEvent::Ignored {
            event: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_against_the_raw_body() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(secret, body, good));
        assert!(!verify_signature(secret, b"Hello, World?", good));
        assert!(!verify_signature(b"other", body, good));
        assert!(!verify_signature(secret, body, "sha1=abc"));
        assert!(!verify_signature(secret, body, "sha256=zz"));
    }

    #[test]
    fn comments_on_issues_are_not_commands_and_bad_payloads_name_the_event() {
        let issue = br#"{"action":"created","issue":{"number":3},"comment":{"id":9,"user":{"login":"a"},"body":"tidemark plan"},"repository":{"full_name":"o/r"}}"#;
        assert!(matches!(
            parse_event("issue_comment", issue),
            Ok(ForgeEvent::Ignored { .. })
        ));
        let pr = br#"{"action":"created","issue":{"number":3,"pull_request":{}},"comment":{"id":9,"user":{"login":"a"},"body":"tidemark plan"},"repository":{"full_name":"o/r"}}"#;
        assert!(matches!(
            parse_event("issue_comment", pr),
            Ok(ForgeEvent::Comment { number: 3, ref comment, .. }) if comment.body == "tidemark plan"
        ));
        let err = parse_event("pull_request", b"{}").expect_err("refused");
        assert!(err.starts_with("pull_request payload"), "{err}");
        assert!(matches!(
            parse_event("star", b"{}"),
            Ok(ForgeEvent::Ignored { .. })
        ));
    }
}

//! The GitHub mock's answers: Prism's example for the endpoint (GitHub's shape) with the
//! fields the mock's state decides written in. See `github_mock.rs`.

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::github_mock::{MockPr, MockState};

type Answer = (StatusCode, Vec<(&'static str, String)>, Value);

/// GitHub's comment limit, in characters.
const MAX_BODY: usize = 65_536;

fn ok(value: Value) -> Answer {
    (StatusCode::OK, Vec::new(), value)
}

fn created(value: Value) -> Answer {
    (StatusCode::CREATED, Vec::new(), value)
}

fn not_found() -> Answer {
    (
        StatusCode::NOT_FOUND,
        Vec::new(),
        json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" }),
    )
}

fn too_long() -> Answer {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Vec::new(),
        json!({
            "message": "Validation Failed",
            "errors": [{ "resource": "IssueComment", "code": "custom", "field": "body",
                         "message": "body is too long (maximum is 65536 characters)" }],
            "documentation_url": "https://docs.github.com/rest"
        }),
    )
}

/// The first element of a list example (the template for every item).
fn item(example: &Value) -> Value {
    match example {
        Value::Array(items) => items.first().cloned().unwrap_or(json!({})),
        other => other.clone(),
    }
}

fn pull(template: &Value, pr: &MockPr, repository: &str) -> Value {
    let mut v = template.clone();
    v["number"] = json!(pr.number);
    v["title"] = json!(pr.title);
    v["state"] = json!(pr.state);
    v["user"]["login"] = json!(pr.author);
    v["draft"] = json!(false);
    v["locked"] = json!(false);
    v["head"]["ref"] = json!(pr.head_ref);
    v["head"]["sha"] = json!(pr.head_sha);
    let head_repo = if pr.fork {
        format!(
            "{}-fork/{}",
            pr.author,
            repository.split('/').nth(1).unwrap_or("repo")
        )
    } else {
        repository.to_string()
    };
    v["head"]["repo"]["full_name"] = json!(head_repo);
    v["base"]["ref"] = json!(pr.base_ref);
    v["base"]["sha"] = json!(pr.base_sha);
    v["base"]["repo"]["full_name"] = json!(repository);
    let label = item(&v["labels"]);
    v["labels"] = Value::Array(
        pr.labels
            .iter()
            .map(|name| {
                let mut l = label.clone();
                l["name"] = json!(name);
                l
            })
            .collect(),
    );
    v["merged_at"] = if pr.merged {
        json!("2026-12-03T12:00:00Z")
    } else {
        Value::Null
    };
    v["closed_at"] = if pr.state == "closed" {
        json!("2026-12-03T12:00:00Z")
    } else {
        Value::Null
    };
    v["merge_commit_sha"] = json!(pr.merge_commit_sha);
    if v.get("merged").is_some() {
        v["merged"] = json!(pr.merged);
        v["mergeable"] = json!(true);
    }
    v
}

fn comment(template: &Value, id: u64, author: &str, body: &str) -> Value {
    let mut v = template.clone();
    v["id"] = json!(id);
    v["body"] = json!(body);
    v["user"]["login"] = json!(author);
    v
}

/// Answers one validated request from the state.
pub fn answer(
    s: &mut MockState,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Option<&Value>,
    example: Value,
) -> Answer {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["app", "installations", _, "access_tokens"] = parts.as_slice() {
        s.token_exchanges += 1;
        let mut v = example;
        v["token"] = json!(format!("ghs_installation_{}", s.token_exchanges));
        v["expires_at"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
        return created(v);
    }
    let ["repos", owner, name, rest @ ..] = parts.as_slice() else {
        return not_found();
    };
    if format!("{owner}/{name}") != s.repository {
        return not_found();
    }
    let repository = s.repository.clone();
    match (method.as_str(), rest) {
        ("GET", ["pulls"]) => {
            let template = item(&example);
            let want_open = !query.contains("state=closed") && !query.contains("state=all");
            let list: Vec<Value> = s
                .pulls
                .values()
                .rev()
                .filter(|pr| !want_open || pr.state == "open")
                .map(|pr| pull(&template, pr, &repository))
                .collect();
            let list = Value::Array(list);
            let etag = format!(
                "\"{}\"",
                hex::encode(Sha256::digest(list.to_string().as_bytes()))
            );
            let sent = headers.get("if-none-match").and_then(|v| v.to_str().ok());
            if sent == Some(etag.as_str()) {
                return (StatusCode::NOT_MODIFIED, vec![("etag", etag)], Value::Null);
            }
            (StatusCode::OK, vec![("etag", etag)], list)
        }
        ("GET", ["pulls", number]) => {
            match number.parse().ok().and_then(|n: u64| s.pulls.get(&n)) {
                Some(pr) => ok(pull(&example, pr, &repository)),
                None => not_found(),
            }
        }
        ("GET", ["pulls", _, "files"]) => ok(json!([])),
        ("GET", ["pulls", number, "reviews"]) => {
            let template = item(&example);
            let number: u64 = number.parse().unwrap_or_default();
            let reviews = s.reviews.get(&number).cloned().unwrap_or_default();
            ok(Value::Array(
                reviews
                    .iter()
                    .map(|(id, user, state, commit)| {
                        let mut v = template.clone();
                        v["id"] = json!(id);
                        v["user"]["login"] = json!(user);
                        v["state"] = json!(state);
                        v["commit_id"] = json!(commit);
                        v
                    })
                    .collect(),
            ))
        }
        ("GET", ["collaborators", user, "permission"]) => match s.permissions.get(*user) {
            Some(permission) => {
                let mut v = example;
                v["permission"] = json!(permission);
                v["role_name"] = json!(permission);
                v["user"]["login"] = json!(user);
                ok(v)
            }
            None => not_found(),
        },
        ("GET", ["issues", number, "comments"]) => {
            let template = item(&example);
            let number: u64 = number.parse().unwrap_or_default();
            let comments = s.comments.get(&number).cloned().unwrap_or_default();
            ok(Value::Array(
                comments
                    .iter()
                    .map(|(id, author, body)| comment(&template, *id, author, body))
                    .collect(),
            ))
        }
        ("POST", ["issues", number, "comments"]) => {
            let text = body
                .and_then(|b| b["body"].as_str())
                .unwrap_or("")
                .to_string();
            if text.chars().count() > MAX_BODY {
                return too_long();
            }
            let number: u64 = number.parse().unwrap_or_default();
            let id = s.new_id();
            s.comments
                .entry(number)
                .or_default()
                .push((id, "tidemark[bot]".into(), text.clone()));
            created(comment(&example, id, "tidemark[bot]", &text))
        }
        ("PATCH", ["issues", "comments", id]) => {
            let text = body
                .and_then(|b| b["body"].as_str())
                .unwrap_or("")
                .to_string();
            if text.chars().count() > MAX_BODY {
                return too_long();
            }
            let id: u64 = id.parse().unwrap_or_default();
            for comments in s.comments.values_mut() {
                if let Some(c) = comments.iter_mut().find(|c| c.0 == id) {
                    c.2 = text.clone();
                    let author = c.1.clone();
                    return ok(comment(&example, id, &author, &text));
                }
            }
            not_found()
        }
        ("POST", ["statuses", sha]) => {
            s.statuses
                .entry(sha.to_string())
                .or_default()
                .push(body.cloned().unwrap_or(Value::Null));
            let mut v = example;
            if let Some(b) = body {
                v["state"] = b["state"].clone();
                v["context"] = b["context"].clone();
            }
            created(v)
        }
        ("POST", ["issues", "comments", id, "reactions"]) => {
            let content = body
                .and_then(|b| b["content"].as_str())
                .unwrap_or("")
                .to_string();
            s.reactions.push((id.parse().unwrap_or_default(), content));
            created(example)
        }
        _ => not_found(),
    }
}

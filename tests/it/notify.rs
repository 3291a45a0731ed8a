//! Slack delivery against a local HTTP receiver speaking the incoming-webhook wire format:
//! POST JSON with `blocks` and `text`; `ok` with 200, 429 with `Retry-After`, 5xx, 404.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tidemark::drift::{CheckResult, Drift, DriftCause, DriftedResource, NotificationKind, assess};
use tidemark::notify::{
    Delivery, DeliveryStatus, DriftAlert, OutboxPolicy, RetryPolicy, SendFailure, SlackNotifier,
    render,
};
use tidemark::runner::{Redactor, redact_plan_json};

/// What the receiver answers, in order; the last answer repeats.
#[derive(Clone, Copy)]
pub(crate) enum Answer {
    Ok,
    RateLimited { retry_after: u64 },
    ServerError,
    NoService,
}

#[derive(Default)]
pub(crate) struct Receiver {
    pub(crate) answers: VecDeque<Answer>,
    /// Every request: its JSON body, when it came, and whether it was answered 200.
    pub(crate) requests: Vec<(Value, Instant, bool)>,
}

pub(crate) type Shared = Arc<Mutex<Receiver>>;

async fn hook(State(rx): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let mut rx = rx.lock().expect("lock");
    let answer = match rx.answers.len() {
        0 => Answer::Ok,
        1 => rx.answers[0],
        _ => rx.answers.pop_front().unwrap_or(Answer::Ok),
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // Slack refuses anything but a JSON object with text or blocks.
    let parsed: Option<Value> = serde_json::from_str(&body).ok().filter(|_| is_json);
    let Some(json) = parsed.filter(|j| j.get("text").is_some() || j.get("blocks").is_some()) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    rx.requests
        .push((json, Instant::now(), matches!(answer, Answer::Ok)));
    match answer {
        Answer::Ok => (StatusCode::OK, "ok").into_response(),
        Answer::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after.to_string())],
            "rate_limited",
        )
            .into_response(),
        Answer::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "rollup_error").into_response(),
        Answer::NoService => (StatusCode::NOT_FOUND, "no_service").into_response(),
    }
}

/// Starts a receiver on 127.0.0.1 and returns its webhook URL.
pub(crate) async fn receiver(answers: &[Answer]) -> (String, Shared) {
    receiver_on(0, answers).await
}

/// Starts a receiver on 127.0.0.1:`port` (0: any free port) and returns its webhook URL.
pub(crate) async fn receiver_on(port: u16, answers: &[Answer]) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Receiver {
        answers: answers.iter().copied().collect(),
        requests: Vec::new(),
    }));
    let app = Router::new()
        .route("/services/T000/B000/token", post(hook))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}/services/T000/B000/token"), shared)
}

pub(crate) fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
    }
}

fn alert() -> DriftAlert {
    let t = DateTime::parse_from_rfc3339("2026-01-01T06:02:00Z")
        .expect("time")
        .with_timezone(&Utc);
    DriftAlert {
        kind: NotificationKind::Drifted,
        repo: "acme/infra".to_string(),
        stack: "stacks/app".to_string(),
        commit: "0123456789abcdef".to_string(),
        drift: Drift {
            resources: vec![DriftedResource {
                address: "null_resource.app".to_string(),
                actions: vec!["delete".to_string(), "create".to_string()],
            }],
            outputs: vec![],
        },
        cause: Some(DriftCause::ChangedOutsideGit),
        since: t,
        checked_at: t,
        run_url: Some("http://tidemark.local/runs/7".to_string()),
    }
}

#[tokio::test]
async fn a_rate_limited_message_arrives_once_after_retry_after() {
    let (url, rx) = receiver(&[Answer::RateLimited { retry_after: 1 }, Answer::Ok]).await;
    let notifier = SlackNotifier::new(&url, fast_policy()).expect("notifier");
    let payload = render(&alert(), 10);

    let sent = notifier.send(&payload).await.expect("delivered");

    assert_eq!(sent.attempts, 2);
    let rx = rx.lock().expect("lock");
    assert_eq!(rx.requests.len(), 2);
    let accepted: Vec<&Value> = rx.requests.iter().filter(|r| r.2).map(|r| &r.0).collect();
    assert_eq!(accepted.len(), 1, "the message arrived exactly once");
    assert_eq!(accepted[0], &payload);
    assert!(
        accepted[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("stacks/app"))
    );
    assert!(
        accepted[0]["blocks"]
            .to_string()
            .contains("null_resource.app")
    );
    let waited = rx.requests[1].1 - rx.requests[0].1;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn a_failing_receiver_yields_a_pending_delivery_that_the_outbox_retries() {
    let (url, rx) = receiver(&[Answer::ServerError]).await;
    let notifier = SlackNotifier::new(&url, fast_policy()).expect("notifier");
    let mut delivery = Delivery::new(render(&alert(), 10), Utc::now());

    match notifier.send(&delivery.payload).await {
        Err(SendFailure::Exhausted {
            attempts,
            last_error,
            retry_after,
        }) => {
            assert_eq!(attempts, 3);
            assert!(last_error.contains("500"), "{last_error}");
            assert!(
                !last_error.contains("token"),
                "the URL leaked: {last_error}"
            );
            assert_eq!(retry_after, None);
        }
        other => panic!("expected exhausted retries, got {other:?}"),
    }
    assert_eq!(
        rx.lock().expect("lock").requests.len(),
        3,
        "bounded attempts"
    );

    let policy = OutboxPolicy::default();
    notifier.deliver(&mut delivery, &policy).await;
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(delivery.attempts, 3);
    assert!(delivery.next_attempt_at > Utc::now() + chrono::Duration::seconds(50));

    // The receiver recovers; the outbox's next send delivers it once.
    rx.lock().expect("lock").answers = [Answer::Ok].into();
    notifier.deliver(&mut delivery, &policy).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempts, 4);
    let rx = rx.lock().expect("lock");
    assert_eq!(rx.requests.iter().filter(|r| r.2).count(), 1);
}

#[tokio::test]
async fn a_long_retry_after_is_left_to_the_outbox() {
    let (url, rx) = receiver(&[Answer::RateLimited { retry_after: 120 }]).await;
    let notifier = SlackNotifier::new(&url, fast_policy()).expect("notifier");
    let mut delivery = Delivery::new(render(&alert(), 10), Utc::now());
    let before = Utc::now();

    notifier
        .deliver(&mut delivery, &OutboxPolicy::default())
        .await;

    assert_eq!(
        rx.lock().expect("lock").requests.len(),
        1,
        "no waiting in-process"
    );
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert!(delivery.next_attempt_at >= before + chrono::Duration::seconds(120));
}

#[tokio::test]
async fn a_rejected_message_is_not_retried() {
    let (url, rx) = receiver(&[Answer::NoService]).await;
    let notifier = SlackNotifier::new(&url, fast_policy()).expect("notifier");
    let mut delivery = Delivery::new(render(&alert(), 10), Utc::now());

    notifier
        .deliver(&mut delivery, &OutboxPolicy::default())
        .await;

    assert_eq!(rx.lock().expect("lock").requests.len(), 1);
    assert_eq!(delivery.status, DeliveryStatus::Dead);
    assert!(
        delivery
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("404 no_service")),
        "{:?}",
        delivery.last_error
    );
}

#[tokio::test]
async fn an_unreachable_webhook_fails_without_leaking_its_url() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}/services/T000/B000/secret-token");
    let notifier = SlackNotifier::new(&url, fast_policy()).expect("notifier");

    let failure = notifier
        .send(&render(&alert(), 10))
        .await
        .expect_err("nobody listens");

    assert_eq!(failure.attempts(), 3);
    let message = failure.to_string();
    assert!(message.contains("Connection refused"), "{message}");
    assert!(!message.contains("secret-token"), "{message}");
}

#[tokio::test]
async fn https_goes_through_rustls_with_the_ring_provider() {
    // A plain-HTTP receiver behind an https URL: the TLS handshake fails, which proves the
    // client was built and tried TLS (reqwest panics on first use without a crypto provider).
    let (url, rx) = receiver(&[Answer::Ok]).await;
    let url = url.replacen("http://", "https://", 1);
    let notifier = SlackNotifier::new(&url, fast_policy()).expect("notifier");

    let failure = notifier
        .send(&render(&alert(), 10))
        .await
        .expect_err("no TLS on the other end");

    let SendFailure::Exhausted { attempts: 3, .. } = &failure else {
        panic!("expected exhausted retries, got {failure:?}");
    };
    let message = failure.to_string();
    assert!(message.contains("InvalidContentType"), "{message}");
    assert!(!message.contains("token"), "{message}");
    assert!(rx.lock().expect("lock").requests.is_empty());
}

/// All the text in a Slack payload, blocks and fallback, one piece a line.
fn payload_texts(payload: &Value) -> String {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(m) => m.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(payload, &mut out);
    out.join("\n")
}

#[test]
fn sensitive_values_stay_sensitive() {
    // A secret that reached a resource key (through `nonsensitive`) is learnt from the
    // plan's sensitive marks and redacted by the runner; rendering keeps the mark.
    let secret = "hunter2-very-secret";
    let mut plan = serde_json::json!({
        "format_version": "0.2",
        "resource_changes": [{
            "address": format!("null_resource.k[\"{secret}\"]"),
            "change": {
                "actions": ["update"],
                "before": {"triggers": {"pw": "old-value-1"}},
                "after": {"triggers": {"pw": secret}},
                "before_sensitive": {"triggers": {"pw": true}},
                "after_sensitive": {"triggers": {"pw": true}},
            },
        }],
    });
    redact_plan_json(&mut plan, &mut Redactor::default());
    let CheckResult::Drifted { drift, .. } = assess(&plan, None, true) else {
        panic!("expected drift");
    };
    let payload = render(&DriftAlert { drift, ..alert() }, 10);
    let all = payload_texts(&payload);
    assert!(
        all.contains("null_resource.k[\"(sensitive)\"]"),
        "missing in\n{all}"
    );
    for absent in [secret, "old-value-1"] {
        assert!(!all.contains(absent), "unexpected {absent:?} in\n{all}");
    }
    assert!(!payload.to_string().contains(secret));
}

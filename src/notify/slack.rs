//! Slack Block Kit messages for drift (pure): a stack became drifted, its drift changed, or it
//! is back in sync.
//!
//! Rendering takes only already-redacted, structured data (addresses, actions, output names,
//! times): no attribute values ever reach it, and text that says `(sensitive)` stays so.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::drift::{Drift, DriftCause, NotificationKind, Transition};

/// How many resources a message lists before "and N more".
pub const DEFAULT_MAX_ITEMS: usize = 10;

/// Slack's limits: a header's text, a section's text, a field's text.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;

/// What a drift message is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftAlert {
    pub kind: NotificationKind,
    pub repo: String,
    pub stack: String,
    /// The commit the check planned (the tracked branch's head).
    pub commit: String,
    /// The drift; for `Resolved`, the drift that cleared.
    pub drift: Drift,
    pub cause: Option<DriftCause>,
    /// When the drift episode began.
    pub since: DateTime<Utc>,
    /// When the check that triggered this message ran.
    pub checked_at: DateTime<Utc>,
    /// The drift check's run in the dashboard, if there is one.
    pub run_url: Option<String>,
}

impl DriftAlert {
    /// The message a drift transition calls for, if any: about the drift the stack is in, or
    /// for `Resolved` the drift that cleared.
    pub fn for_transition(
        transition: &Transition,
        repo: &str,
        stack: &str,
        commit: &str,
        run_url: Option<String>,
    ) -> Option<Self> {
        let kind = transition.notify?;
        let open = match kind {
            NotificationKind::Resolved => transition.cleared.as_ref()?,
            NotificationKind::Drifted | NotificationKind::Changed => {
                transition.record.open.as_ref()?
            }
        };
        Some(Self {
            kind,
            repo: repo.to_string(),
            stack: stack.to_string(),
            commit: commit.to_string(),
            drift: open.drift.clone(),
            cause: Some(open.cause),
            since: open.first_seen,
            checked_at: transition.record.checked_at,
            run_url,
        })
    }
}

/// The webhook payload for `alert`: Block Kit `blocks` plus the `text` Slack shows in
/// notifications, listing at most `max_items` resources.
pub fn render(alert: &DriftAlert, max_items: usize) -> Value {
    let stack = escape(&alert.stack);
    let repo = escape(&alert.repo);
    let (emoji, title, text) = match alert.kind {
        NotificationKind::Drifted => (
            ":warning:",
            "Drift detected",
            format!(
                "Drift detected in {stack} ({repo}): {}",
                counts(&alert.drift)
            ),
        ),
        NotificationKind::Changed => (
            ":arrows_counterclockwise:",
            "Drift changed",
            format!(
                "Drift changed in {stack} ({repo}): {}",
                counts(&alert.drift)
            ),
        ),
        NotificationKind::Resolved => (
            ":white_check_mark:",
            "Drift resolved",
            format!("{stack} ({repo}) is back in sync"),
        ),
    };
    let header = truncate(&format!("{emoji} {title}: {}", alert.stack), HEADER_MAX);
    let mut fields = vec![
        field("Stack", &format!("`{}`", code(&alert.stack))),
        field("Repo", &repo),
        field("Commit", &format!("`{}`", code(short(&alert.commit)))),
    ];
    match alert.kind {
        NotificationKind::Resolved => {
            fields.push(field("Drifted since", &when(alert.since)));
            fields.push(field("In sync since", &when(alert.checked_at)));
        }
        _ => fields.push(field("Drifted since", &when(alert.since))),
    }
    if let (Some(cause), false) = (alert.cause, alert.kind == NotificationKind::Resolved) {
        fields.push(field("Cause", cause.describe()));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
        json!({"type": "section", "fields": fields}),
    ];
    if alert.kind != NotificationKind::Resolved {
        blocks.push(json!({"type": "section", "text": {
            "type": "mrkdwn",
            "text": truncate(&drift_list(&alert.drift, max_items), SECTION_MAX),
        }}));
    }
    if let Some(url) = &alert.run_url {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": "View run"},
            "url": url,
        }]}));
    }
    json!({"text": text, "blocks": blocks})
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": truncate(&format!("*{label}*\n{value}"), FIELD_MAX)})
}

/// "3 resources, 1 output".
fn counts(drift: &Drift) -> String {
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let mut parts = vec![plural(drift.resources.len(), "resource")];
    if !drift.outputs.is_empty() {
        parts.push(plural(drift.outputs.len(), "output"));
    }
    parts.join(", ")
}

/// The bulleted list of what drifted, capped at `max_items` with "and N more".
fn drift_list(drift: &Drift, max_items: usize) -> String {
    let mut lines = vec![format!("*What drifted* ({})", counts(drift))];
    for resource in drift.resources.iter().take(max_items) {
        lines.push(format!(
            "• `{}` {}",
            code(&resource.address),
            escape(&action_words(&resource.actions))
        ));
    }
    if drift.resources.len() > max_items {
        lines.push(format!("_and {} more_", drift.resources.len() - max_items));
    }
    if !drift.outputs.is_empty() {
        let shown: Vec<String> = drift
            .outputs
            .iter()
            .take(max_items)
            .map(|o| format!("`{}`", code(o)))
            .collect();
        let more = drift.outputs.len().saturating_sub(max_items);
        let tail = if more > 0 {
            format!(" _and {more} more_")
        } else {
            String::new()
        };
        lines.push(format!("Outputs: {}{tail}", shown.join(", ")));
    }
    lines.join("\n")
}

/// Terraform's action list in words: `["delete", "create"]` is a replacement.
fn action_words(actions: &[String]) -> String {
    let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
    match actions.as_slice() {
        ["create"] => "create".to_string(),
        ["update"] => "update".to_string(),
        ["delete"] => "delete".to_string(),
        ["delete", "create"] | ["create", "delete"] => "replace".to_string(),
        other => other.join(", "),
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Escapes the three characters Slack's mrkdwn reserves.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for inside backticks: escaped, with any backtick (which would end the span) replaced.
fn code(text: &str) -> String {
    escape(text).replace('`', "'")
}

/// Cuts `text` to at most `max` characters, ending with "…" when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{CheckResult, DriftedResource};

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn drift(n: usize) -> Drift {
        Drift {
            resources: (0..n)
                .map(|i| DriftedResource {
                    address: format!("null_resource.r{i:02}"),
                    actions: vec!["update".to_string()],
                })
                .collect(),
            outputs: vec!["id".to_string()],
        }
    }

    fn alert(kind: NotificationKind, drift: Drift) -> DriftAlert {
        DriftAlert {
            kind,
            repo: "acme/infra".to_string(),
            stack: "stacks/network".to_string(),
            commit: "0123456789abcdef0123".to_string(),
            drift,
            cause: Some(DriftCause::ChangedOutsideGit),
            since: t("2026-01-01T06:02:00Z"),
            checked_at: t("2026-01-01T12:01:00Z"),
            run_url: Some("https://tidemark.example/runs/42".to_string()),
        }
    }

    /// All the text in a payload, blocks and fallback, one piece a line.
    fn texts(payload: &Value) -> String {
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

    fn check(alert: &DriftAlert, max_items: usize, present: &[&str], absent: &[&str]) -> Value {
        let payload = render(alert, max_items);
        assert!(payload["text"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(payload["blocks"].as_array().is_some_and(|b| !b.is_empty()));
        let all = texts(&payload);
        for p in present {
            assert!(all.contains(p), "missing {p:?} in\n{all}");
        }
        for a in absent {
            assert!(!all.contains(a), "unexpected {a:?} in\n{all}");
        }
        payload
    }

    #[test]
    fn alerts_follow_transitions() {
        use crate::drift::transition;
        let drifted = CheckResult::Drifted {
            drift: drift(2),
            fingerprint: drift(2).fingerprint(),
            cause: DriftCause::NotYetApplied,
            outside: None,
        };
        let first = transition(None, &drifted, t("2026-01-01T06:02:00Z"));
        let a = DriftAlert::for_transition(&first, "r", "s", "c", None).expect("drifted");
        assert_eq!(
            (a.kind, a.drift.resources.len()),
            (NotificationKind::Drifted, 2)
        );
        assert_eq!(a.cause, Some(DriftCause::NotYetApplied));
        let again = transition(Some(&first.record), &drifted, t("2026-01-01T07:00:00Z"));
        assert_eq!(
            DriftAlert::for_transition(&again, "r", "s", "c", None),
            None
        );
        let clear = transition(
            Some(&again.record),
            &CheckResult::InSync,
            t("2026-01-01T08:00:00Z"),
        );
        let r = DriftAlert::for_transition(&clear, "r", "s", "c", None).expect("resolved");
        assert_eq!(r.kind, NotificationKind::Resolved);
        assert_eq!(r.drift, drift(2), "the drift that cleared");
        assert_eq!(r.since, t("2026-01-01T06:02:00Z"));
        assert_eq!(r.checked_at, t("2026-01-01T08:00:00Z"));
    }

    #[test]
    fn drifted_message_names_everything_and_caps_the_list() {
        let payload = check(
            &alert(NotificationKind::Drifted, drift(13)),
            10,
            &[
                ":warning: Drift detected: stacks/network",
                "Drift detected in stacks/network (acme/infra): 13 resources, 1 output",
                "`stacks/network`",
                "acme/infra",
                "`0123456789ab`",
                "2026-01-01 06:02 UTC",
                "changed outside git",
                "• `null_resource.r00` update",
                "• `null_resource.r09` update",
                "_and 3 more_",
                "Outputs: `id`",
                "https://tidemark.example/runs/42",
            ],
            &["null_resource.r10", "0123456789abc"],
        );
        assert_eq!(payload["blocks"][0]["type"], "header");
        assert_eq!(payload["blocks"][3]["elements"][0]["type"], "button");
    }

    #[test]
    fn a_short_list_has_no_more_line() {
        check(
            &alert(NotificationKind::Changed, drift(2)),
            10,
            &[
                ":arrows_counterclockwise: Drift changed",
                "null_resource.r01",
            ],
            &["more_"],
        );
    }

    #[test]
    fn resolved_message_says_since_when_and_lists_nothing() {
        let mut a = alert(NotificationKind::Resolved, drift(3));
        a.run_url = None;
        let payload = check(
            &a,
            10,
            &[
                "Drift resolved: stacks/network",
                "is back in sync",
                "Drifted since*\n2026-01-01 06:02 UTC",
                "In sync since*\n2026-01-01 12:01 UTC",
            ],
            &["null_resource", "changed outside git", "View run"],
        );
        assert_eq!(payload["blocks"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn replacements_and_markup_are_rendered_safely() {
        let mut d = drift(0);
        d.resources.push(DriftedResource {
            address: "aws_s3_bucket.b[\"<x>&`y`\"]".to_string(),
            actions: vec!["delete".to_string(), "create".to_string()],
        });
        check(
            &alert(NotificationKind::Drifted, d),
            10,
            &["`aws_s3_bucket.b[\"&lt;x&gt;&amp;'y'\"]` replace"],
            &["<x>"],
        );
    }
}

//! Tests of drift assessment and the drift state machine.

use super::*;
use serde_json::json;

fn rc(address: &str, actions: &[&str]) -> Value {
    json!({"address": address, "change": {"actions": actions}})
}

fn plan(changes: &[(&str, &[&str])], outputs: &[(&str, &str)]) -> Value {
    let outputs: serde_json::Map<String, Value> = outputs
        .iter()
        .map(|(name, action)| (name.to_string(), json!({"actions": [action]})))
        .collect();
    json!({
        "format_version": "0.2",
        "resource_changes": changes.iter().map(|(a, x)| rc(a, x)).collect::<Vec<_>>(),
        "output_changes": outputs,
    })
}

fn t(minute: u32) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("2026-01-01T00:{minute:02}:00Z"))
        .expect("test time")
        .with_timezone(&Utc)
}

#[test]
fn drift_is_normalized_and_fingerprinted_independently_of_order() {
    let a = plan(
        &[
            ("null_resource.b", &["update"]),
            ("data.x.y", &["read"]),
            ("null_resource.a", &["delete", "create"]),
            ("null_resource.same", &["no-op"]),
        ],
        &[("z", "update"), ("a", "create"), ("kept", "no-op")],
    );
    let b = plan(
        &[
            ("null_resource.a", &["delete", "create"]),
            ("null_resource.b", &["update"]),
        ],
        &[("a", "create"), ("z", "update")],
    );
    let drift = Drift::from_plan(&a).expect("drift");
    let addresses: Vec<_> = drift.resources.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(addresses, ["null_resource.a", "null_resource.b"]);
    assert_eq!(drift.outputs, ["a", "z"]);
    let fp = drift.fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(fp, Drift::from_plan(&b).expect("drift").fingerprint());

    // Another action on the same address is another drift.
    let c = plan(
        &[
            ("null_resource.a", &["create", "delete"]),
            ("null_resource.b", &["update"]),
        ],
        &[("a", "create"), ("z", "update")],
    );
    assert_ne!(fp, Drift::from_plan(&c).expect("drift").fingerprint());
}

#[test]
fn refresh_only_plans_report_resource_drift() {
    // Terraform 1.0 puts what changed outside it under `resource_drift`.
    let refresh = json!({
        "format_version": "0.2",
        "resource_drift": [rc("null_resource.gone", &["delete"]), rc("null_resource.b", &["update"])],
        "resource_changes": [rc("null_resource.b", &["no-op"]), rc("null_resource.c", &["update"])],
        "output_changes": {"id": {"actions": ["update"]}},
    });
    let outside = Drift::from_refresh_only(&refresh).expect("drift");
    let got: Vec<_> = outside
        .resources
        .iter()
        .map(|r| format!("{} {}", r.address, r.actions.join(",")))
        .collect();
    assert_eq!(
        got,
        [
            "null_resource.b update",
            "null_resource.c update",
            "null_resource.gone delete"
        ]
    );
    assert_eq!(outside.outputs, ["id"]);
    let clean = json!({"format_version": "0.2", "resource_drift": [], "resource_changes": []});
    assert!(Drift::from_refresh_only(&clean).expect("drift").is_empty());
}

#[test]
fn assess_tells_outside_changes_from_unapplied_code() {
    let changed = plan(&[("null_resource.a", &["delete", "create"])], &[]);
    let clean = plan(&[], &[]);
    let refresh_drift = json!({"format_version": "0.2",
        "resource_drift": [rc("null_resource.a", &["update"])]});
    let refresh_clean = json!({"format_version": "0.2"});

    let cause =
        |plan: &Value, refresh: Option<&Value>, applied: bool| match assess(plan, refresh, applied)
        {
            CheckResult::Drifted { cause, .. } => Some(cause),
            CheckResult::InSync => None,
            CheckResult::Error { message } => panic!("unexpected error {message}"),
        };
    assert_eq!(cause(&clean, Some(&refresh_drift), true), None);
    assert_eq!(cause(&clean, None, false), None);
    assert_eq!(
        cause(&changed, Some(&refresh_drift), true),
        Some(DriftCause::ChangedOutsideGit)
    );
    // Applied, nothing changed in the infrastructure itself, yet the plan differs: the state
    // was changed by another apply or `terraform state rm`.
    assert_eq!(
        cause(&changed, Some(&refresh_clean), true),
        Some(DriftCause::ChangedOutsideGit)
    );
    assert_eq!(
        cause(&changed, Some(&refresh_clean), false),
        Some(DriftCause::NotYetApplied)
    );
    assert_eq!(
        cause(&changed, None, false),
        Some(DriftCause::NotYetApplied)
    );
    // Without a refresh-only plan, the plan's own `resource_drift` tells.
    let mut changed_with_drift = changed.clone();
    changed_with_drift["resource_drift"] = json!([rc("null_resource.a", &["update"])]);
    assert_eq!(
        cause(&changed_with_drift, None, false),
        Some(DriftCause::Both)
    );
    match assess(&changed_with_drift, None, true) {
        CheckResult::Drifted { outside, drift, .. } => {
            let outside = outside.expect("resource_drift read");
            assert_eq!(outside.resources[0].actions, ["update"]);
            assert_eq!(drift.resources[0].actions, ["delete", "create"]);
        }
        other => panic!("expected drift, got {other:?}"),
    }
    assert_eq!(
        cause(&changed, Some(&refresh_drift), false),
        Some(DriftCause::Both)
    );

    match assess(&json!({"not": "a plan"}), None, true) {
        CheckResult::Error { message } => assert!(message.contains("format_version"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    match assess(&changed, Some(&json!([])), true) {
        CheckResult::Error { message } => assert!(message.contains("refresh-only"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A check result for the sequences below: `""` in sync, `"!"` an error, anything else the
/// drift of one resource with that address.
fn result(step: &str) -> CheckResult {
    match step {
        "" => CheckResult::InSync,
        "!" => CheckResult::Error {
            message: "plan failed".to_string(),
        },
        address => assess(&plan(&[(address, &["update"])], &[]), None, true),
    }
}

/// Runs a sequence of checks, one a minute, from a stack never checked, and compares the
/// messages each one calls for and the states it leaves.
fn check(steps: &[&str], expected: &[(Option<NotificationKind>, DriftState)]) -> DriftRecord {
    assert_eq!(steps.len(), expected.len());
    let mut record: Option<DriftRecord> = None;
    let mut got = Vec::new();
    for (minute, step) in steps.iter().enumerate() {
        let next = transition(record.as_ref(), &result(step), t(minute as u32));
        got.push((next.notify, next.record.state));
        record = Some(next.record);
    }
    assert_eq!(got, expected, "steps {steps:?}");
    record.expect("at least one step")
}

use DriftState::{Drifted as D, Error as E, InSync as S};
use NotificationKind::{Changed, Drifted, Resolved};

#[test]
fn one_message_per_change_of_drift_never_one_per_check() {
    check(
        &["", "", "a", "a", "a", "b", "b", "", ""],
        &[
            (None, S),
            (None, S),
            (Some(Drifted), D),
            (None, D),
            (None, D),
            (Some(Changed), D),
            (None, D),
            (Some(Resolved), S),
            (None, S),
        ],
    );
}

#[test]
fn errors_never_resolve_and_never_repeat_a_message() {
    check(
        &["a", "!", "a", "!", "!", "", "!", ""],
        &[
            (Some(Drifted), D),
            (None, E),
            (None, D),
            (None, E),
            (None, E),
            (Some(Resolved), S),
            (None, E),
            (None, S),
        ],
    );
    // A failed first check followed by drift announces the drift; an error that ends in a
    // different drift says it changed.
    check(&["!", "a"], &[(None, E), (Some(Drifted), D)]);
    check(
        &["a", "!", "b"],
        &[(Some(Drifted), D), (None, E), (Some(Changed), D)],
    );
}

#[test]
fn first_and_last_seen_follow_the_episode() {
    let record = check(
        &["", "a", "a", "b", "!", "b"],
        &[
            (None, S),
            (Some(Drifted), D),
            (None, D),
            (Some(Changed), D),
            (None, E),
            (None, D),
        ],
    );
    let open = record.open.clone().expect("open drift");
    assert_eq!(
        open.first_seen,
        t(1),
        "the episode began with the first drift"
    );
    assert_eq!(
        open.fingerprint_since,
        t(3),
        "the drift changed at minute 3"
    );
    assert_eq!(open.last_seen, t(5));
    assert_eq!(record.since, t(1));
    assert_eq!(record.checked_at, t(5));
    assert_eq!(open.drift.resources[0].address, "b");

    let resolved = transition(Some(&record), &CheckResult::InSync, t(9));
    assert_eq!(resolved.record.open, None);
    assert_eq!(resolved.record.since, t(9));
    assert_eq!(resolved.notify, Some(Resolved));
    assert_eq!(resolved.cleared.map(|o| o.first_seen), Some(t(1)));
}

#[test]
fn states_serialize_in_snake_case() {
    assert_eq!(
        serde_json::to_value([S, D, E]).expect("json"),
        json!(["in_sync", "drifted", "error"])
    );
    assert_eq!(DriftState::InSync.as_str(), "in_sync");
    assert_eq!(
        serde_json::to_value(DriftCause::ChangedOutsideGit).expect("json"),
        json!("changed_outside_git")
    );
}

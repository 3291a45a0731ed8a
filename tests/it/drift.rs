//! Drift end to end with real terraform 1.0.3: checks of an applied stack whose state another
//! copy changes out of band, assessed, carried through the state machine, rendered and posted
//! to a local Slack receiver. The test plays the engine's part (running terraform directly,
//! keeping the record in memory), so it pins the building blocks, not the wiring.

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde_json::Value;
use tidemark::engine::{CheckResult, DriftRecord, DriftState, assess, transition};
use tidemark::notify::{DriftAlert, SlackNotifier, render};
use tidemark::runner::{Redactor, redact_plan_json};

use crate::notify::{Answer, fast_policy, receiver};
use crate::support::Toolchain;

/// Two working copies of one stack sharing a local state file: `ours` is what Tidemark
/// checks, `theirs` is someone applying from elsewhere.
struct Copies {
    dir: tempfile::TempDir,
}

const STACK: &str = r#"terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
  backend "local" { path = "../shared.tfstate" }
}

variable "v" {
  default = "one"
}

resource "null_resource" "this" {
  triggers = { value = var.v }
}

resource "null_resource" "other" {
  triggers = { value = "fixed" }
}

output "value" {
  value = null_resource.this.triggers.value
}
"#;

impl Copies {
    fn new() -> Self {
        let copies = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for name in ["ours", "theirs"] {
            std::fs::create_dir_all(copies.path(name)).expect("mkdir");
            std::fs::write(copies.path(name).join("main.tf"), STACK).expect("write main.tf");
            terraform(&copies.path(name), &["init", "-no-color", "-input=false"]);
        }
        copies
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// One drift check of `ours`: the plan and a refresh-only plan, both redacted as the
    /// runner would, then assessed.
    fn check(&self) -> CheckResult {
        let ours = self.path("ours");
        let plan = plan_json(&ours, &[]);
        let refresh = plan_json(&ours, &["-refresh-only"]);
        assess(&plan, Some(&refresh), true)
    }
}

fn terraform(dir: &Path, args: &[&str]) -> Vec<u8> {
    Toolchain::get().run(dir, args)
}

fn plan_json(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["plan", "-no-color", "-input=false", "-out=drift.tfplan"];
    args.extend_from_slice(extra);
    terraform(dir, &args);
    let json = terraform(dir, &["show", "-json", "drift.tfplan"]);
    let mut plan: Value = serde_json::from_slice(&json).expect("plan JSON");
    redact_plan_json(&mut plan, &mut Redactor::default());
    plan
}

/// Plays the engine for one check: assess, transition, and post the message it calls for.
struct Engine {
    record: Option<DriftRecord>,
    notifier: SlackNotifier,
}

impl Engine {
    async fn check(&mut self, copies: &Copies) -> DriftState {
        let t = transition(self.record.as_ref(), &copies.check(), Utc::now());
        let alert = DriftAlert::for_transition(&t, "acme/infra", "ours", "0123456789abcdef", None);
        if let Some(alert) = alert {
            let payload = render(&alert, 10);
            self.notifier.send(&payload).await.expect("delivered");
        }
        let state = t.record.state;
        self.record = Some(t.record);
        state
    }
}

#[tokio::test]
async fn out_of_band_changes_send_one_message_each_way() {
    let copies = Copies::new();
    let (url, rx) = receiver(&[Answer::Ok]).await;
    let received = || -> Vec<Value> {
        let rx = rx.lock().expect("lock");
        rx.requests.iter().map(|r| r.0.clone()).collect()
    };
    let mut engine = Engine {
        record: None,
        notifier: SlackNotifier::new(&url, fast_policy()).expect("notifier"),
    };
    terraform(
        &copies.path("ours"),
        &["apply", "-auto-approve", "-no-color", "-input=false"],
    );
    assert_eq!(engine.check(&copies).await, DriftState::InSync);
    assert_eq!(received().len(), 0);

    // Someone applies another value from their own copy, sharing the state.
    let theirs = copies.path("theirs");
    let apply_theirs = |value: &str| {
        terraform(
            &theirs,
            &[
                "apply",
                "-auto-approve",
                "-no-color",
                "-input=false",
                &format!("-var=v={value}"),
            ],
        )
    };
    apply_theirs("two");
    assert_eq!(engine.check(&copies).await, DriftState::Drifted);
    let messages = received();
    assert_eq!(messages.len(), 1);
    let text = messages[0].to_string();
    assert!(text.contains("Drift detected"), "{text}");
    assert!(text.contains("null_resource.this"), "{text}");
    assert!(text.contains("replace"), "{text}");
    assert!(text.contains("changed outside git"), "{text}");
    assert!(!text.contains("null_resource.other"), "{text}");

    // A second check with the same drift sends nothing.
    assert_eq!(engine.check(&copies).await, DriftState::Drifted);
    assert_eq!(
        received().len(),
        1,
        "one message per drift, not one per check"
    );

    // Undoing it resolves the drift: one message.
    apply_theirs("one");
    assert_eq!(engine.check(&copies).await, DriftState::InSync);
    let messages = received();
    assert_eq!(messages.len(), 2);
    assert!(
        messages[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("back in sync"))
    );

    // `terraform state rm` is drift too: the plan wants to create the resource again.
    terraform(
        &theirs,
        &["state", "rm", "-no-color", "null_resource.other"],
    );
    assert_eq!(engine.check(&copies).await, DriftState::Drifted);
    let messages = received();
    assert_eq!(messages.len(), 3);
    let text = messages[2].to_string();
    assert!(text.contains("`null_resource.other` create"), "{text}");
    assert!(text.contains("1 resource"), "{text}");
    let open = engine.record.and_then(|r| r.open).expect("open drift");
    assert_eq!(open.drift.resources.len(), 1);
}

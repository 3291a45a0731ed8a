//! Drift checks in the service: the scheduler fed from the stacks table queues a drift run per
//! due stack, and when a drift run finishes its plan is assessed, carried through the drift
//! state machine, stored with the check's history, and any message put in the outbox.
//!
//! Several instances run the same schedules (the jitter is a hash of the stack, so they agree
//! on when). Double checks are avoided in the database: the first instance to record a stack's
//! tick in `drift_ticks` queues its check, and only when none of the stack is queued or running
//! (`Store::enqueue_drift`); the others skip it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::schedule::{Completion, DueCheck, Entry, Jitter, Scheduler, Update};
use crate::config::RepoConfig;
use crate::drift::{CheckResult, DriftRecord, assess, transition};
use crate::notify::{DEFAULT_MAX_ITEMS, DriftAlert, render};
use crate::schedule::DriftSchedule;
use crate::store::{DriftCheck, DriftDecision, DriftSaved, Run, RunOutcome, RunStatus, Store};

/// What the worker needs to assess a finished drift run; cheap to clone.
#[derive(Debug, Clone)]
pub struct DriftHook {
    /// The base of run links in messages (`{base_url}/api/v1/runs/{id}`).
    pub base_url: String,
    /// Whether messages go to the outbox (a Slack webhook is configured).
    pub notify: bool,
    /// Woken when a message was put in the outbox.
    pub outbox: Arc<Notify>,
    /// Woken when a drift check was recorded, so the scheduler frees its slot at once.
    pub checked: Arc<Notify>,
}

impl DriftHook {
    /// Assesses a finished drift run and records it. A plan that failed or timed out is an
    /// `error` check; a plan that succeeded is assessed from its stored (redacted) plan JSON.
    pub async fn after_check(
        &self,
        store: &Store,
        run: &Run,
        outcome: &RunOutcome,
    ) -> Result<Option<DriftSaved>> {
        let result = if outcome.status == RunStatus::Succeeded {
            let artifact = store
                .artifact(run.id)
                .await?
                .with_context(|| format!("drift run {} stored no plan", run.id))?;
            let json = crate::crypto::decompress(&artifact.plan_json)
                .with_context(|| format!("reading the plan JSON of drift run {}", run.id))?;
            let head_applied = store
                .head_applied(&run.repo, &run.stack, &run.commit)
                .await?;
            match serde_json::from_slice::<Value>(&json) {
                Ok(plan) => assess(&plan, None, head_applied),
                Err(e) => CheckResult::Error {
                    message: format!("drift plan JSON: {e}"),
                },
            }
        } else {
            failed_check(outcome)
        };
        let now = Utc::now();
        crate::telemetry::drift_checked(match &result {
            CheckResult::InSync => "in_sync",
            CheckResult::Drifted { .. } => "drifted",
            CheckResult::Error { .. } => "error",
        });
        let check = DriftCheck {
            repo: &run.repo,
            stack: &run.stack,
            run_id: run.id,
            commit: &run.commit,
            result: &result,
            checked_at: now,
        };
        let run_url = format!("{}/api/v1/runs/{}", self.base_url, run.id);
        let saved = store
            .record_drift_check(&check, |previous| {
                decide(previous, &check, Some(run_url), self.notify, now)
            })
            .await
            .with_context(|| format!("recording drift check run {}", run.id))?;
        if let Some(saved) = &saved {
            info!(
                state = saved.decision.record.state.as_str(),
                notified = saved.outbox_id.is_some(),
                "drift check recorded"
            );
            if saved.outbox_id.is_some() {
                self.outbox.notify_one();
            }
        }
        self.checked.notify_one();
        Ok(saved)
    }
}

/// The check result of a drift run that did not succeed.
fn failed_check(outcome: &RunOutcome) -> CheckResult {
    let why = outcome
        .error
        .as_deref()
        .and_then(|e| e.lines().next())
        .unwrap_or("no error recorded");
    CheckResult::Error {
        message: format!("drift plan {}: {why}", outcome.status),
    }
}

/// The new record and, when the transition calls for one and `notify` is on, the rendered
/// Slack message (pure).
pub fn decide(
    previous: Option<&DriftRecord>,
    check: &DriftCheck<'_>,
    run_url: Option<String>,
    notify: bool,
    now: DateTime<Utc>,
) -> DriftDecision {
    let t = transition(previous, check.result, now);
    let message = notify
        .then(|| DriftAlert::for_transition(&t, check.repo, check.stack, check.commit, run_url))
        .flatten()
        .map(|alert| (alert.kind, render(&alert, DEFAULT_MAX_ITEMS)));
    DriftDecision {
        record: t.record,
        message,
    }
}

/// The scheduler's id of a stack: `repo:path` (repository names hold no `:`).
fn stack_id(repo: &str, stack: &str) -> String {
    format!("{repo}:{stack}")
}

/// Queues drift checks as the schedules say, one task per instance.
pub struct DriftFlow {
    pub store: Store,
    /// The tracked repositories: their default schedules; stacks of others are not checked.
    pub repos: Vec<RepoConfig>,
    /// At most this many drift checks queued or running at once from this instance.
    pub cap: usize,
    pub jitter: Jitter,
    /// Woken when the stacks table changed.
    pub stacks_changed: Arc<Notify>,
    /// Woken when a drift check was recorded.
    pub checked: Arc<Notify>,
    /// Woken after a run was queued, so idle workers start at once.
    pub work: Arc<Notify>,
    /// How often the stacks table is read again even unprompted (another instance may have
    /// synced it), and how often the runs of checks in flight are looked at.
    pub reload_every: Duration,
    pub poll_every: Duration,
}

impl DriftFlow {
    /// Runs until shutdown. Database errors are logged and retried on the next round.
    pub async fn run(self, shutdown: CancellationToken) {
        let start = Utc::now();
        let entries = match self.entries().await {
            Ok(entries) => entries,
            Err(err) => {
                warn!(error = %format!("{err:#}"), "reading drift schedules failed; starting with none");
                Vec::new()
            }
        };
        let mut known: HashSet<String> = entries.iter().map(|e| e.stack.clone()).collect();
        info!(
            stacks = entries.len(),
            cap = self.cap,
            "drift scheduler started"
        );
        let scheduler = Scheduler::new(entries, self.cap, self.jitter, start);
        let (due_tx, mut due_rx) = mpsc::channel::<DueCheck>(self.cap.max(1));
        let (updates_tx, updates_rx) = mpsc::channel::<Update>(64);
        let sched = tokio::spawn(scheduler.run(start, shutdown.clone(), due_tx, updates_rx));
        let mut in_flight: HashMap<i64, Completion> = HashMap::new();
        let mut reload = tokio::time::interval(self.reload_every);
        reload.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                due = due_rx.recv() => match due {
                    Some(check) => self.queue(check, &mut in_flight).await,
                    None => break,
                },
                _ = self.stacks_changed.notified() => {
                    self.reload(&mut known, &updates_tx).await;
                }
                _ = reload.tick() => self.reload(&mut known, &updates_tx).await,
                _ = self.checked.notified() => self.settle(&mut in_flight).await,
                _ = tokio::time::sleep(self.poll_every), if !in_flight.is_empty() => {
                    self.settle(&mut in_flight).await;
                }
            }
        }
        drop(updates_tx);
        let _ = sched.await;
    }

    /// The scheduler entries: every stack with a schedule (its own, else its repository's).
    async fn entries(&self) -> Result<Vec<Entry>> {
        let defaults: HashMap<&str, Option<&str>> = self
            .repos
            .iter()
            .map(|r| (r.name.as_str(), r.drift_schedule.as_deref()))
            .collect();
        let mut entries = Vec::new();
        for stack in self.store.drift_stacks().await? {
            let Some(default) = defaults.get(stack.repo.as_str()) else {
                continue;
            };
            let Some(expression) = stack.drift_schedule.as_deref().or(*default) else {
                continue;
            };
            match DriftSchedule::parse(expression) {
                Ok(schedule) => entries.push(Entry {
                    stack: stack_id(&stack.repo, &stack.stack),
                    schedule,
                    last_check: stack.last_check,
                }),
                Err(err) => {
                    warn!(repo = %stack.repo, stack = %stack.stack, error = %err, "stack not checked for drift")
                }
            }
        }
        Ok(entries)
    }

    /// Sends the scheduler every current entry (unchanged ones are no-ops) and removes
    /// stacks that are gone.
    async fn reload(&self, known: &mut HashSet<String>, updates: &mpsc::Sender<Update>) {
        let entries = match self.entries().await {
            Ok(entries) => entries,
            Err(err) => {
                warn!(error = %format!("{err:#}"), "reloading drift schedules failed");
                return;
            }
        };
        let current: HashSet<String> = entries.iter().map(|e| e.stack.clone()).collect();
        for gone in known.difference(&current) {
            let _ = updates.send(Update::Remove(gone.clone())).await;
        }
        for entry in entries {
            let _ = updates.send(Update::Upsert(entry)).await;
        }
        *known = current;
    }

    /// Queues the due check's run; its slot stays taken until that run is final. A check
    /// another instance already queued frees the slot at once.
    async fn queue(&self, check: DueCheck, in_flight: &mut HashMap<i64, Completion>) {
        let due = &check.due;
        let Some((repo, stack)) = due.stack.split_once(':') else {
            return;
        };
        let reason = if due.catch_up {
            format!("drift schedule: catch-up for the tick at {}", due.tick)
        } else {
            format!("drift schedule: tick at {}", due.tick)
        };
        match self
            .store
            .enqueue_drift(repo, stack, due.tick, &reason)
            .await
        {
            Ok(Some(id)) => {
                info!(run = id, %repo, %stack, "drift check queued");
                in_flight.insert(id, check.completion);
                self.work.notify_waiters();
            }
            Ok(None) => check.completion.finish(),
            Err(err) => {
                warn!(%repo, %stack, error = %format!("{err:#}"), "queueing a drift check failed");
                check.completion.finish();
            }
        }
    }

    /// Frees the slots of checks whose runs are final (or gone).
    async fn settle(&self, in_flight: &mut HashMap<i64, Completion>) {
        if in_flight.is_empty() {
            return;
        }
        let ids: Vec<i64> = in_flight.keys().copied().collect();
        let statuses = match self.store.run_statuses(&ids).await {
            Ok(statuses) => statuses,
            Err(err) => {
                warn!(error = %format!("{err:#}"), "reading drift run statuses failed");
                return;
            }
        };
        let live: HashSet<i64> = statuses
            .into_iter()
            .filter(|(_, status)| !status.is_final())
            .map(|(id, _)| id)
            .collect();
        in_flight.retain(|id, _| live.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{Drift, DriftCause, DriftState, DriftedResource, NotificationKind};

    fn drifted(address: &str) -> CheckResult {
        let drift = Drift {
            resources: vec![DriftedResource {
                address: address.to_string(),
                actions: vec!["update".to_string()],
            }],
            outputs: vec![],
        };
        CheckResult::Drifted {
            fingerprint: drift.fingerprint(),
            drift,
            cause: DriftCause::ChangedOutsideGit,
            outside: None,
        }
    }

    /// Runs `results` through `decide` in order; returns the message kinds and final state.
    fn check(results: &[CheckResult], notify: bool) -> (Vec<Option<NotificationKind>>, DriftState) {
        let mut record = None;
        let mut kinds = Vec::new();
        for (i, result) in results.iter().enumerate() {
            let check = DriftCheck {
                repo: "infra",
                stack: "stacks/app",
                run_id: i as i64,
                commit: "0123456789abcdef",
                result,
                checked_at: Utc::now(),
            };
            let url = Some(format!("http://tm.example/api/v1/runs/{i}"));
            let decision = decide(record.as_ref(), &check, url, notify, Utc::now());
            if let Some((_, payload)) = &decision.message {
                assert!(payload.to_string().contains("stacks/app"));
                assert!(payload.to_string().contains(&format!("/api/v1/runs/{i}")));
            }
            kinds.push(decision.message.map(|(kind, _)| kind));
            record = Some(decision.record);
        }
        (kinds, record.map(|r| r.state).unwrap_or(DriftState::InSync))
    }

    #[test]
    fn one_message_per_change_of_drift() {
        use NotificationKind::*;
        let error = CheckResult::Error {
            message: "drift plan failed".into(),
        };
        let (kinds, state) = check(
            &[
                CheckResult::InSync,
                drifted("a.b"),
                drifted("a.b"),
                error.clone(),
                drifted("a.b"),
                drifted("a.c"),
                CheckResult::InSync,
                CheckResult::InSync,
                error,
            ],
            true,
        );
        assert_eq!(
            kinds,
            [
                None,
                Some(Drifted),
                None,
                None,
                None,
                Some(Changed),
                Some(Resolved),
                None,
                None
            ]
        );
        assert_eq!(state, DriftState::Error);
    }

    #[test]
    fn without_a_webhook_nothing_is_queued_but_state_is_kept() {
        let (kinds, state) = check(&[drifted("a.b")], false);
        assert_eq!((kinds, state), (vec![None], DriftState::Drifted));
    }

    #[test]
    fn a_failed_plan_is_an_error_naming_its_first_line() {
        let outcome = RunOutcome {
            status: RunStatus::TimedOut,
            exit_code: None,
            error: Some("step plan timed out after 30m:\nmore".into()),
            summary: None,
        };
        assert_eq!(
            failed_check(&outcome),
            CheckResult::Error {
                message: "drift plan timed_out: step plan timed out after 30m:".into()
            }
        );
    }
}

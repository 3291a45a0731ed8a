//! Delivery metrics (dora.dev's five) from apply history, pure. A deployment is a successful
//! apply; its lead time runs from each commit it carried (committer time) to its end. A failure
//! is a failed apply, an apply an operator marked failed, or a successful apply followed by a
//! revert applied to the same stack within the revert window; recovery runs from the failure to
//! the stack's next good apply, and that apply is rework. Drift time-to-reconcile is reported
//! beside them, never counted as a failure.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// One finished apply (succeeded or failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apply {
    /// `repo/stack`: failures and recoveries are followed per stack instance.
    pub stack: String,
    pub succeeded: bool,
    /// An operator marked this apply failed after it ran.
    pub marked_failed: bool,
    pub finished_at: DateTime<Utc>,
    /// The committer time of each commit a successful apply carried.
    pub carried: Vec<DateTime<Utc>>,
    /// One of the carried commits reverts an earlier one.
    pub revert: bool,
}

/// One stretch of drift: from the check that found it to the check that found it gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriftSpan {
    pub detected: DateTime<Utc>,
    pub resolved: DateTime<Utc>,
}

/// The window and rules of a computation.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// A revert applied within this long of a stack's previous deployment marks it failed.
    pub revert_window: TimeDelta,
}

/// The figures of one window (the field names are a contract: scripts read them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dora {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Successful applies in the window.
    pub deployments: usize,
    pub deployment_frequency_per_day: f64,
    /// From each carried commit's committer time to its deployment's end.
    pub lead_time_seconds: Spread,
    /// Failures over attempts (deployments and failed applies); `null` without attempts.
    pub change_fail_rate: Option<f64>,
    /// From a failure to the stack's next good apply.
    pub recovery_time_seconds: Spread,
    /// Deployments that recovered a failing stack over all deployments; `null` without any.
    pub rework_rate: Option<f64>,
    /// Failed applies, marked or reverted deployments.
    pub failures: usize,
    /// Deployments and failed applies.
    pub attempts: usize,
    /// Stacks whose last failure has not been recovered at the window's end.
    pub failing_stacks: usize,
    /// From drift found to drift gone (not a failure; shown beside the others).
    pub drift_reconcile_seconds: Spread,
}

/// A median and a 90th percentile (nearest rank); `null` without samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: Option<f64>,
    pub p90: Option<f64>,
    pub count: usize,
}

/// The figures over `window` of `applies` (any order; applies before the window give context:
/// the deployment a revert undoes, a failure still open) and `drift`.
pub fn dora(applies: &[Apply], drift: &[DriftSpan], window: &Window) -> Dora {
    let inside = |at: DateTime<Utc>| at >= window.since && at <= window.until;
    let mut sorted: Vec<&Apply> = applies
        .iter()
        .filter(|a| a.finished_at <= window.until)
        .collect();
    sorted.sort_by(|a, b| (&a.stack, a.finished_at).cmp(&(&b.stack, b.finished_at)));
    let (mut deployments, mut attempts, mut failures, mut rework, mut failing) = (0, 0, 0, 0, 0);
    let (mut lead, mut recovery) = (Vec::new(), Vec::new());
    for stack in sorted.chunk_by(|a, b| a.stack == b.stack) {
        // The stack's last good deployment (not yet marked or reverted) and its open failure.
        let mut last_good: Option<&Apply> = None;
        let mut failing_since: Option<DateTime<Utc>> = None;
        for apply in stack {
            let counted = inside(apply.finished_at);
            attempts += usize::from(counted);
            if apply.succeeded && counted {
                deployments += 1;
                lead.extend(
                    apply
                        .carried
                        .iter()
                        .map(|at| seconds(apply.finished_at - *at)),
                );
            }
            if !apply.succeeded || apply.marked_failed {
                failures += usize::from(counted);
                failing_since.get_or_insert(apply.finished_at);
                if apply.succeeded {
                    last_good = None;
                }
                continue;
            }
            if apply.revert
                && let Some(previous) = last_good
                && apply.finished_at - previous.finished_at <= window.revert_window
            {
                // The revert says the previous deployment failed.
                if inside(previous.finished_at) {
                    failures += 1;
                }
                failing_since.get_or_insert(previous.finished_at);
            }
            if let Some(since) = failing_since.take()
                && counted
            {
                recovery.push(seconds(apply.finished_at - since));
                rework += 1;
            }
            last_good = Some(apply);
        }
        failing += usize::from(failing_since.is_some());
    }
    let reconcile = drift
        .iter()
        .filter(|d| inside(d.resolved))
        .map(|d| seconds(d.resolved - d.detected))
        .collect();
    let days = (window.until - window.since).num_seconds().max(1) as f64 / 86_400.0;
    let ratio = |part: usize, whole: usize| (whole > 0).then(|| part as f64 / whole as f64);
    Dora {
        since: window.since,
        until: window.until,
        deployments,
        deployment_frequency_per_day: deployments as f64 / days,
        lead_time_seconds: spread(lead),
        change_fail_rate: ratio(failures, attempts),
        recovery_time_seconds: spread(recovery),
        rework_rate: ratio(rework, deployments),
        failures,
        attempts,
        failing_stacks: failing,
        drift_reconcile_seconds: spread(reconcile),
    }
}

/// Whether a commit message reverts an earlier commit (git's `Revert "..."` form).
pub fn is_revert(message: &str) -> bool {
    message.trim_start().starts_with("Revert \"")
}

fn seconds(delta: TimeDelta) -> f64 {
    delta.num_milliseconds().max(0) as f64 / 1000.0
}

fn spread(mut samples: Vec<f64>) -> Spread {
    samples.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    let any = !samples.is_empty();
    Spread {
        median: any.then(|| rank(0.5)),
        p90: any.then(|| rank(0.9)),
        count: samples.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).expect("time")
    }

    fn apply(stack: &str, ok: bool, finished: i64, carried: &[i64]) -> Apply {
        Apply {
            stack: stack.into(),
            succeeded: ok,
            marked_failed: false,
            finished_at: at(finished),
            carried: carried.iter().copied().map(at).collect(),
            revert: false,
        }
    }

    fn window(from: i64, to: i64) -> Window {
        Window {
            since: at(from),
            until: at(to),
            revert_window: TimeDelta::minutes(60),
        }
    }

    #[test]
    fn the_five_keys_worked_out_by_hand() {
        let revert = Apply {
            revert: true,
            ..apply("infra/b", true, 200, &[190])
        };
        let applies = [
            // Before the window: a's failure at -10 is still open when the window starts.
            apply("infra/a", false, -10, &[]),
            apply("infra/a", true, 20, &[0, 10]),
            apply("infra/a", false, 100, &[]),
            apply("infra/a", true, 160, &[150]),
            apply("infra/b", true, 150, &[140]),
            // Reverts b's deployment 50 minutes later: that deployment failed.
            revert,
            // Marked failed by an operator: a failure, still open at the end.
            Apply {
                marked_failed: true,
                ..apply("infra/c", true, 300, &[290])
            },
        ];
        let d = dora(&applies, &[], &window(0, 1440));
        assert_eq!(d.deployments, 5);
        assert!((d.deployment_frequency_per_day - 5.0).abs() < 1e-9);
        // Lead times: 20, 10, 10, 10, 10, 10 minutes (c's deployment counts: it ran).
        assert_eq!(d.lead_time_seconds.count, 6);
        assert_eq!(d.lead_time_seconds.median, Some(600.0));
        assert_eq!(d.lead_time_seconds.p90, Some(1200.0));
        // Attempts: 6 in the window; failures: a@100, b@150 (reverted), c@300.
        assert_eq!((d.attempts, d.failures), (6, 3));
        assert_eq!(d.change_fail_rate, Some(0.5));
        // Recoveries: a from -10 to 20 (30 min), a from 100 to 160 (60), b from 150 to 200 (50).
        assert_eq!(d.recovery_time_seconds.count, 3);
        assert_eq!(d.recovery_time_seconds.median, Some(3000.0));
        assert_eq!(d.rework_rate, Some(3.0 / 5.0));
        assert_eq!(d.failing_stacks, 1);
    }

    #[test]
    fn a_late_revert_is_a_new_change_not_a_failure() {
        let applies = [
            apply("infra/a", true, 0, &[]),
            Apply {
                revert: true,
                ..apply("infra/a", true, 200, &[190])
            },
        ];
        let d = dora(&applies, &[], &window(-10, 300));
        assert_eq!((d.failures, d.deployments), (0, 2));
        assert_eq!(d.change_fail_rate, Some(0.0));
        assert_eq!(d.rework_rate, Some(0.0));
    }

    #[test]
    fn no_applies_is_no_rates_and_no_times() {
        let drift = [DriftSpan {
            detected: at(10),
            resolved: at(40),
        }];
        let d = dora(&[], &drift, &window(0, 1440));
        assert_eq!((d.change_fail_rate, d.rework_rate), (None, None));
        assert_eq!(d.lead_time_seconds.median, None);
        assert_eq!(d.deployment_frequency_per_day, 0.0);
        assert_eq!(d.drift_reconcile_seconds.median, Some(1800.0));
    }

    #[test]
    fn reverts_are_recognised_by_git_s_message() {
        assert!(is_revert(
            "Revert \"add bucket\"\n\nThis reverts commit 1234."
        ));
        assert!(!is_revert("Reverting is hard"));
    }
}

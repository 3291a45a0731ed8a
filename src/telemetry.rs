//! Process metrics for `/metrics`: every counter and histogram Tidemark records, named in one
//! place, on the `metrics` facade with a Prometheus recorder installed once per process.
//! Histograms have explicit buckets (never summaries), so several instances' series aggregate.
//! No label takes a stack, pull request, commit or path: 10,000 stacks must not mean tens of
//! thousands of series (the capped per-stack series of `metrics_per_stack` are written by
//! `/metrics` from the database, not recorded here).

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for durations, seconds: from an HTTP request to a long apply.
const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Buckets for change lead time, seconds: a minute to a month.
const LEAD_TIME: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0,
    2592000.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle). `None` when
/// another recorder was installed first (an embedding program's): metrics then go there.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("tidemark_change_lead_time_seconds".into()),
                    LEAD_TIME,
                )
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS))
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            gauge!("tidemark_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The Prometheus text exposition of every metric recorded so far (empty without a recorder).
pub fn render() -> String {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("tidemark_build_info", "Always 1; the version is a label");
    describe_counter!("tidemark_runs_total", "Runs finished, by kind and status");
    describe_histogram!(
        "tidemark_run_duration_seconds",
        "From a run's start to its end, by kind"
    );
    describe_histogram!(
        "tidemark_run_phase_duration_seconds",
        "One step of a run (export, init, plan, show, apply), by phase"
    );
    describe_histogram!(
        "tidemark_queue_wait_seconds",
        "From a run being queued to a worker claiming it, by kind"
    );
    describe_gauge!(
        "tidemark_runs_in_progress",
        "Runs this instance is executing, by kind"
    );
    describe_counter!(
        "tidemark_lease_expirations_total",
        "Runs taken back from a worker that stopped or lost its lease, by kind"
    );
    describe_counter!(
        "tidemark_drift_checks_total",
        "Drift checks recorded, by result"
    );
    describe_counter!(
        "tidemark_policy_evaluations_total",
        "Plans evaluated against policy, by verdict"
    );
    describe_counter!("tidemark_polls_total", "Repository polls, by result");
    describe_counter!(
        "tidemark_webhook_deliveries_total",
        "Webhook deliveries received, by event and result"
    );
    describe_counter!(
        "tidemark_notifications_total",
        "Notification sends, by channel and result"
    );
    describe_counter!(
        "tidemark_http_requests_total",
        "HTTP requests, by route template and status class"
    );
    describe_histogram!(
        "tidemark_http_request_duration_seconds",
        "HTTP request handling time, by route template"
    );
    describe_histogram!(
        "tidemark_change_lead_time_seconds",
        "From the applied commit's committer time to its successful apply"
    );
}

/// A worker claimed a run that waited `waited` seconds in the queue.
pub fn run_started(kind: &'static str, waited: f64) {
    install();
    histogram!("tidemark_queue_wait_seconds", "kind" => kind).record(waited.max(0.0));
    gauge!("tidemark_runs_in_progress", "kind" => kind).increment(1.0);
}

/// A run this instance executed ended with `status` after `took` seconds.
pub fn run_finished(kind: &'static str, status: &'static str, took: f64) {
    install();
    counter!("tidemark_runs_total", "kind" => kind, "status" => status).increment(1);
    histogram!("tidemark_run_duration_seconds", "kind" => kind).record(took.max(0.0));
    gauge!("tidemark_runs_in_progress", "kind" => kind).decrement(1.0);
}

/// One step of a run took `took` seconds.
pub fn phase(phase: &'static str, took: f64) {
    install();
    histogram!("tidemark_run_phase_duration_seconds", "phase" => phase).record(took.max(0.0));
}

/// Runs of `kind` were taken back from a worker that is gone.
pub fn lease_expired(kind: &str, runs: u64) {
    install();
    counter!("tidemark_lease_expirations_total", "kind" => kind.to_string()).increment(runs);
}

/// A drift check ended with `result` (`in_sync`, `drifted`, `error`).
pub fn drift_checked(result: &'static str) {
    install();
    counter!("tidemark_drift_checks_total", "result" => result).increment(1);
}

/// A plan was evaluated against policy (`passed`, `failed`, `error`, `none`).
pub fn policy_evaluated(verdict: &'static str) {
    install();
    counter!("tidemark_policy_evaluations_total", "verdict" => verdict).increment(1);
}

/// A repository poll ended with `result` (`new_commit`, `unchanged`, `error`).
pub fn polled(result: &'static str) {
    install();
    counter!("tidemark_polls_total", "result" => result).increment(1);
}

/// A webhook delivery of `event` was handled with `result` (`accepted`, `ignored`,
/// `rejected`).
pub fn webhook(event: &str, result: &'static str) {
    install();
    // Only the events Tidemark reads are labels; anything else is "other".
    let event = match event {
        "push" | "pull_request" | "issue_comment" | "pull_request_review" | "ping" => event,
        _ => "other",
    };
    counter!("tidemark_webhook_deliveries_total", "event" => event.to_string(), "result" => result)
        .increment(1);
}

/// A notification to `channel` (`slack`, `webhook`, `pr_comment`) was sent or failed.
pub fn notification(channel: &'static str, result: &'static str) {
    install();
    counter!("tidemark_notifications_total", "channel" => channel, "result" => result).increment(1);
}

/// An HTTP request to `route` (its template, such as `/api/v1/runs/{id}`) ended with `status`.
pub fn http_request(method: &str, route: &str, status: u16, took: f64) {
    install();
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!(
        "tidemark_http_requests_total",
        "method" => method.to_string(),
        "route" => route.to_string(),
        "status_class" => class
    )
    .increment(1);
    histogram!("tidemark_http_request_duration_seconds", "route" => route.to_string())
        .record(took.max(0.0));
}

/// A successful apply carried a commit committed `seconds` before it ended.
pub fn lead_time(seconds: f64) {
    install();
    histogram!("tidemark_change_lead_time_seconds").record(seconds.max(0.0));
}

/// Sets a gauge read from the database at scrape time, with at most one label.
pub fn set_gauge(name: &'static str, label: Option<(&'static str, String)>, value: f64) {
    install();
    match label {
        Some((key, value_label)) => gauge!(name, key => value_label).set(value),
        None => gauge!(name).set(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_with_buckets() {
        run_started("plan", 0.2);
        run_finished("plan", "succeeded", 1.5);
        http_request("GET", "/api/v1/runs/{id}", 404, 0.003);
        let text = render();
        assert!(text.contains("tidemark_runs_total{kind=\"plan\",status=\"succeeded\"}"));
        assert!(text.contains("tidemark_run_duration_seconds_bucket{kind=\"plan\",le=\"2.5\"}"));
        assert!(text.contains(
            "tidemark_http_requests_total{method=\"GET\",route=\"/api/v1/runs/{id}\",status_class=\"4xx\"}"
        ));
        assert!(text.contains("tidemark_build_info{version=\""));
        assert!(
            !text.contains("quantile="),
            "histograms, not summaries:\n{text}"
        );
    }
}

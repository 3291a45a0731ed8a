//! A run's log on its way to the store: lines batched as they arrive, and capped per run so
//! one run cannot fill the database.

use tokio::sync::mpsc;
use tracing::warn;

use crate::runner::{self, LogLine};
use crate::store::Store;

/// The most a run stores of its log, over all its steps (each step's output is capped
/// already; these bound a run of many steps, or a tool printing empty lines).
pub(super) const MAX_LOG_LINES: usize = 50_000;
pub(super) const MAX_LOG_BYTES: usize = 16 << 20;

/// Writes log lines into the store in small batches as they arrive; past the run's caps, one
/// line says so and the rest is read and dropped (the steps never block on a full channel).
pub(super) async fn drain(store: Store, run_id: i64, mut rx: mpsc::Receiver<LogLine>) {
    let mut batch = Vec::new();
    let mut cap = LogCap::default();
    while let Some(line) = rx.recv().await {
        cap.keep(line, &mut batch);
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(line) => cap.keep(line, &mut batch),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(err) = store.append_logs(run_id, &batch).await {
            warn!(run = run_id, error = %err, "storing log lines failed");
        }
        batch.clear();
    }
}

/// Counts what a run's log has stored so far.
#[derive(Debug, Default)]
struct LogCap {
    lines: usize,
    bytes: usize,
    full: bool,
}

impl LogCap {
    fn keep(&mut self, line: LogLine, batch: &mut Vec<(String, String, String)>) {
        if self.full {
            return;
        }
        self.lines += 1;
        self.bytes += line.text.len();
        if self.lines > MAX_LOG_LINES || self.bytes > MAX_LOG_BYTES {
            self.full = true;
            let text = format!(
                "log truncated: this run's log reached its cap ({MAX_LOG_LINES} lines or {} MiB); \
                 the rest of its output was not stored",
                MAX_LOG_BYTES >> 20
            );
            batch.push((line.step, "system".into(), text));
            return;
        }
        batch.push(log_row(line));
    }
}

fn log_row(line: LogLine) -> (String, String, String) {
    let stream = match line.stream {
        runner::Stream::Stdout => "stdout",
        runner::Stream::Stderr => "stderr",
        runner::Stream::System => "system",
    };
    (line.step, stream.to_string(), line.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            step: "plan".into(),
            stream: runner::Stream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn past_the_line_cap_one_line_says_so_and_the_rest_is_dropped() {
        let mut cap = LogCap::default();
        let mut batch = Vec::new();
        for _ in 0..MAX_LOG_LINES + 10 {
            cap.keep(line(""), &mut batch);
        }
        assert_eq!(batch.len(), MAX_LOG_LINES + 1);
        let last = batch.last().expect("a last line");
        assert_eq!(last.1, "system");
        assert!(last.2.starts_with("log truncated"), "{}", last.2);
    }

    #[test]
    fn past_the_byte_cap_the_log_stops_too() {
        let mut cap = LogCap::default();
        let mut batch = Vec::new();
        let big = "x".repeat(1 << 20);
        for _ in 0..20 {
            cap.keep(line(&big), &mut batch);
        }
        assert_eq!(batch.len(), (MAX_LOG_BYTES >> 20) + 1);
        assert!(batch.iter().map(|l| l.2.len()).sum::<usize>() <= MAX_LOG_BYTES + 200);
    }
}

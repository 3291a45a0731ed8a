//! The scheduler's async driver: sleeps on tokio's clock until the next stack is due, hands
//! due checks to the engine through a channel, and frees a slot when a check completes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Due, Entry, Scheduler};

/// A change to the scheduled stacks while the scheduler runs (a config reload).
#[derive(Debug, Clone)]
pub enum Update {
    /// Adds a stack or replaces its schedule; see [`Scheduler::insert`].
    Upsert(Entry),
    /// Stops scheduling a stack; see [`Scheduler::remove`].
    Remove(String),
}

impl Scheduler {
    /// Runs the scheduler until `shutdown`: each due stack is sent into `sink` as a
    /// [`DueCheck`], and counts against the cap until the engine finishes or drops its
    /// [`Completion`]. `updates` carries config changes. `start` is the wall-clock time when
    /// this is called; later wall-clock times are `start` plus tokio's monotonic elapsed time,
    /// so paused time in tests drives the schedule. Returns when shutdown is signalled or the
    /// receiver of `sink` is gone; checks already handed out are the engine's to finish or
    /// abandon.
    pub async fn run(
        mut self,
        start: DateTime<Utc>,
        shutdown: CancellationToken,
        sink: mpsc::Sender<DueCheck>,
        mut updates: mpsc::Receiver<Update>,
    ) {
        let clock = Clock::new(start);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut updates_open = true;
        loop {
            for due in self.next_due(clock.now()) {
                let check = DueCheck {
                    completion: Completion {
                        stack: Some(due.stack.clone()),
                        done: done_tx.clone(),
                    },
                    due,
                };
                // A bounded sink is backpressure: while the engine is slow to take checks we
                // wait here; completions queue up in the unbounded channel meanwhile.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    sent = sink.send(check) => if sent.is_err() { return },
                }
            }
            let wake = self.next_wake().map(|at| clock.instant(at));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                done = done_rx.recv() => {
                    // `done_tx` lives in this function, so the channel never closes here.
                    if let Some(stack) = done {
                        self.finished(&stack);
                    }
                }
                update = updates.recv(), if updates_open => match update {
                    Some(Update::Upsert(entry)) => self.insert(entry, clock.now()),
                    Some(Update::Remove(stack)) => self.remove(&stack),
                    // Nobody sends updates any more: the stacks stay as they are.
                    None => updates_open = false,
                },
                _ = sleep_until_opt(wake) => {}
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Wall-clock time as `start` plus tokio's elapsed time.
struct Clock {
    start: DateTime<Utc>,
    base: Instant,
}

impl Clock {
    fn new(start: DateTime<Utc>) -> Self {
        Self {
            start,
            base: Instant::now(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        // Only an elapsed time beyond i64 milliseconds (292 million years) fails to convert.
        let elapsed =
            chrono::Duration::from_std(self.base.elapsed()).unwrap_or(chrono::TimeDelta::zero());
        self.start + elapsed
    }

    fn instant(&self, at: DateTime<Utc>) -> Instant {
        self.base + (at - self.start).to_std().unwrap_or(Duration::ZERO)
    }
}

/// A due drift check handed to the engine by [`Scheduler::run`].
#[derive(Debug)]
pub struct DueCheck {
    pub due: Due,
    pub completion: Completion,
}

/// Frees the check's slot under the cap when finished or dropped, so a check the engine
/// abandons (or a task that panics) cannot hold a slot forever.
#[derive(Debug)]
pub struct Completion {
    stack: Option<String>,
    done: mpsc::UnboundedSender<String>,
}

impl Completion {
    /// Marks the check finished.
    pub fn finish(mut self) {
        self.send();
    }

    fn send(&mut self) {
        if let Some(stack) = self.stack.take() {
            // The scheduler may have shut down; then nobody needs to know.
            let _ = self.done.send(stack);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.send();
    }
}

//! The drift scheduler: decides when each stack's drift check runs on its
//! [`DriftSchedule`] (per-stack jitter, a concurrency cap, one catch-up run
//! for ticks missed while the service was down).
//!
//! The scheduler has a synchronous core ([`Scheduler::next_due`], [`Scheduler::finished`],
//! [`Scheduler::next_wake`]) that is a pure function of the wall-clock times passed in, and an
//! async driver ([`Scheduler::run`], in `driver.rs`) that sleeps on tokio's clock, so tests can
//! pause time.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

mod driver;

pub use driver::{Completion, DueCheck, Update};

use crate::schedule::DriftSchedule;

/// How far a stack's check is moved past its tick: a deterministic offset in
/// `[0, min(max, interval * fraction))`, derived from a hash of the stack id so a restart keeps
/// the same offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    /// The largest offset, whatever the interval.
    pub max: Duration,
    /// The largest offset as a fraction of the schedule's interval (0.0 to 1.0).
    pub fraction: f64,
}

impl Default for Jitter {
    /// Up to 10% of the interval, at most five minutes.
    fn default() -> Self {
        Self {
            max: Duration::from_secs(300),
            fraction: 0.1,
        }
    }
}

impl Jitter {
    /// No jitter at all.
    pub const NONE: Jitter = Jitter {
        max: Duration::ZERO,
        fraction: 0.0,
    };

    /// The offset of `stack` for a schedule whose interval is `interval`.
    pub fn offset(&self, stack: &str, interval: Duration) -> Duration {
        let fraction = self.fraction.clamp(0.0, 1.0);
        let window = self.max.min(interval.mul_f64(fraction));
        let window_ms = window.as_millis() as u64;
        if window_ms == 0 {
            return Duration::ZERO;
        }
        let digest = Sha256::digest(stack.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Duration::from_millis(u64::from_be_bytes(first) % window_ms)
    }
}

/// One stack to check on a schedule.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The stack's id, as the engine names it (e.g. `repo:path`); also the jitter seed.
    pub stack: String,
    pub schedule: DriftSchedule,
    /// When its last drift check ran (from the store), or `None` if it never ran. A stack
    /// that never ran waits for its next tick: a new stack is not a missed one.
    pub last_check: Option<DateTime<Utc>>,
}

/// A drift check whose time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub stack: String,
    /// The tick this check is for (for a catch-up run, the last tick missed).
    pub tick: DateTime<Utc>,
    /// The tick plus the stack's jitter: when the check was meant to start.
    pub fire_at: DateTime<Utc>,
    /// True when this run makes up for ticks missed while the service was down.
    pub catch_up: bool,
}

struct Slot {
    entry: Entry,
    tick: DateTime<Utc>,
    fire_at: DateTime<Utc>,
    catch_up: bool,
    /// `Some(start)` while its check runs.
    running_since: Option<DateTime<Utc>>,
    /// No future tick: the slot stays but never fires again.
    exhausted: bool,
}

/// Decides which stacks' drift checks run when.
///
/// Invariants: a stack is either waiting in `queue` (keyed by its fire time) or running, never
/// both; at most `cap` stacks run at once; a stack whose fire time passed while the cap was full
/// stays at the head of the queue (oldest first) until a slot frees up, so nothing is dropped.
pub struct Scheduler {
    slots: Vec<Slot>,
    by_stack: HashMap<String, usize>,
    queue: BTreeSet<(DateTime<Utc>, usize)>,
    running: usize,
    cap: usize,
    jitter: Jitter,
}

impl Scheduler {
    /// A scheduler for `entries` as of `now`. An entry whose schedule ticked after its
    /// `last_check` and at or before `now` was missed while the service was down: it runs once
    /// as soon as `now` plus its jitter comes, however many ticks it missed. Duplicate stack
    /// ids keep the last entry. A cap of 0 is treated as 1.
    pub fn new(entries: Vec<Entry>, cap: usize, jitter: Jitter, now: DateTime<Utc>) -> Self {
        let mut scheduler = Self {
            slots: Vec::with_capacity(entries.len()),
            by_stack: HashMap::with_capacity(entries.len()),
            queue: BTreeSet::new(),
            running: 0,
            cap: cap.max(1),
            jitter,
        };
        for entry in entries {
            scheduler.insert(entry, now);
        }
        scheduler
    }

    /// Adds a stack, or replaces its schedule (a config change). Re-sending an unchanged
    /// entry (a reload) changes nothing, so a stack that is due and waiting for a slot keeps
    /// its place. A running check keeps its slot; a new schedule applies from when it
    /// finishes. The later of the two `last_check` times is kept.
    pub fn insert(&mut self, mut entry: Entry, now: DateTime<Utc>) {
        if let Some(&index) = self.by_stack.get(&entry.stack) {
            let slot = &mut self.slots[index];
            entry.last_check = entry.last_check.max(slot.entry.last_check);
            if slot.running_since.is_some() {
                slot.entry = entry;
                // `finished` re-plans it; it skips exhausted (removed) slots.
                slot.exhausted = false;
                return;
            }
            let unchanged = slot.entry.schedule.expression() == entry.schedule.expression();
            if unchanged && !slot.exhausted {
                return;
            }
            self.queue.remove(&(slot.fire_at, index));
            slot.entry = entry;
            self.plan_first(index, now);
            return;
        }
        let index = self.slots.len();
        self.by_stack.insert(entry.stack.clone(), index);
        self.slots.push(Slot {
            entry,
            tick: now,
            fire_at: now,
            catch_up: false,
            running_since: None,
            exhausted: false,
        });
        self.plan_first(index, now);
    }

    /// Stops scheduling a stack. A check already running still counts against the cap until
    /// [`Scheduler::finished`] is called for it.
    pub fn remove(&mut self, stack: &str) {
        if let Some(&index) = self.by_stack.get(stack) {
            let slot = &mut self.slots[index];
            self.queue.remove(&(slot.fire_at, index));
            slot.exhausted = true;
        }
    }

    /// Stacks whose fire time is at or before `now`, oldest first, as many as the cap allows.
    /// Each returned stack counts as running until [`Scheduler::finished`] is called for it.
    pub fn next_due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut due = Vec::new();
        while self.running < self.cap {
            let Some(&(fire_at, index)) = self.queue.first() else {
                break;
            };
            if fire_at > now {
                break;
            }
            self.queue.pop_first();
            let slot = &mut self.slots[index];
            slot.running_since = Some(now);
            self.running += 1;
            due.push(Due {
                stack: slot.entry.stack.clone(),
                tick: slot.tick,
                fire_at,
                catch_up: slot.catch_up,
            });
        }
        due
    }

    /// Records that `stack`'s check finished. Its next run is the first tick after the check
    /// *started*: ticks that passed while it waited for a slot or ran are covered by it.
    pub fn finished(&mut self, stack: &str) {
        let Some(&index) = self.by_stack.get(stack) else {
            return;
        };
        let slot = &mut self.slots[index];
        let Some(started) = slot.running_since.take() else {
            return;
        };
        self.running -= 1;
        slot.entry.last_check = Some(started);
        if !slot.exhausted {
            self.plan_next(index, started);
        }
    }

    /// When the next stack becomes due, if a slot is free to run it. `None` means only a
    /// [`Scheduler::finished`] call (or an insert) can make anything due.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        if self.running >= self.cap {
            return None;
        }
        self.queue.first().map(|(fire_at, _)| *fire_at)
    }

    /// How many checks are running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// How many stacks are due at `now` but wait for a free slot.
    pub fn waiting(&self, now: DateTime<Utc>) -> usize {
        self.queue.iter().take_while(|(t, _)| *t <= now).count()
    }

    /// The stack's jitter offset for its schedule as of `at`.
    fn offset(&self, index: usize, at: DateTime<Utc>) -> Duration {
        let entry = &self.slots[index].entry;
        match entry.schedule.interval_after(at) {
            Some(interval) => self.jitter.offset(&entry.stack, interval),
            None => Duration::ZERO,
        }
    }

    /// Plans a stack's first run: a catch-up run now if it missed a tick, else its next tick.
    fn plan_first(&mut self, index: usize, now: DateTime<Utc>) {
        let entry = &self.slots[index].entry;
        let missed = entry
            .last_check
            .and_then(|last| entry.schedule.next_after(last))
            .filter(|tick| *tick <= now);
        match missed {
            Some(_) => {
                // The last tick at or before `now` is the one this catch-up run stands for.
                let last_tick = last_tick_at_or_before(&entry.schedule, entry.last_check, now);
                let offset = self.offset(index, now);
                self.enqueue(index, last_tick.unwrap_or(now), now + offset, true);
            }
            None => self.plan_next(index, now),
        }
    }

    /// Plans a stack's run at its first tick after `after`, plus its jitter.
    fn plan_next(&mut self, index: usize, after: DateTime<Utc>) {
        let slot = &mut self.slots[index];
        match slot.entry.schedule.next_after(after) {
            Some(tick) => {
                let offset = self.offset(index, tick - chrono::Duration::seconds(1));
                self.enqueue(index, tick, tick + offset, false);
            }
            None => slot.exhausted = true,
        }
    }

    fn enqueue(
        &mut self,
        index: usize,
        tick: DateTime<Utc>,
        fire_at: DateTime<Utc>,
        catch_up: bool,
    ) {
        let slot = &mut self.slots[index];
        slot.tick = tick;
        slot.fire_at = fire_at;
        slot.catch_up = catch_up;
        slot.exhausted = false;
        self.queue.insert((fire_at, index));
    }
}

/// The latest tick after `last` and at or before `now`, walking ticks forward (bounded, so a
/// per-second schedule after a long outage does not spin: past the bound `now` stands in).
fn last_tick_at_or_before(
    schedule: &DriftSchedule,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut latest = None;
    let mut after = last?;
    for _ in 0..10_000 {
        match schedule.next_after(after) {
            Some(tick) if tick <= now => {
                latest = Some(tick);
                after = tick;
            }
            _ => return latest,
        }
    }
    Some(now)
}

#[cfg(test)]
mod tests;

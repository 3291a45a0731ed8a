//! Tests of drift schedules and the scheduler, the async ones on tokio's paused clock.

use super::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

fn schedule(expr: &str) -> DriftSchedule {
    DriftSchedule::parse(expr).expect("test schedule")
}

#[test]
fn jitter_is_deterministic_and_within_its_window() {
    let jitter = Jitter::default();
    let six_hours = Duration::from_secs(6 * 3600);
    let ten_minutes = Duration::from_secs(600);
    let mut distinct = BTreeSet::new();
    for i in 0..1000 {
        let stack = format!("repo:stacks/{i}");
        let offset = jitter.offset(&stack, six_hours);
        assert_eq!(offset, jitter.offset(&stack, six_hours));
        assert!(offset < Duration::from_secs(300), "{offset:?}");
        // 10% of ten minutes is one minute, below the five-minute maximum.
        assert!(jitter.offset(&stack, ten_minutes) < Duration::from_secs(60));
        distinct.insert(offset);
    }
    assert!(distinct.len() > 990, "{} distinct offsets", distinct.len());
    assert_eq!(Jitter::NONE.offset("a", six_hours), Duration::ZERO);
}

fn entry(stack: &str, expr: &str, last_check: Option<&str>) -> Entry {
    Entry {
        stack: stack.to_string(),
        schedule: schedule(expr),
        last_check: last_check.map(at),
    }
}

#[test]
fn a_due_stack_waits_for_a_free_slot_and_is_not_dropped() {
    let start = at("2026-01-01T00:30:00Z");
    let entries = vec![entry("a", "0 * * * *", None), entry("b", "0 * * * *", None)];
    let mut s = Scheduler::new(entries, 1, Jitter::NONE, start);
    assert_eq!(s.next_wake(), Some(at("2026-01-01T01:00:00Z")));
    assert!(s.next_due(at("2026-01-01T00:59:59Z")).is_empty());

    let first = s.next_due(at("2026-01-01T01:00:00Z"));
    assert_eq!(first.len(), 1);
    assert_eq!(s.running(), 1);
    assert_eq!(s.waiting(at("2026-01-01T01:00:00Z")), 1);
    assert_eq!(s.next_wake(), None, "no timer while the cap is full");
    // The first check outlives the next tick; the other stack still waits.
    assert!(s.next_due(at("2026-01-01T02:30:00Z")).is_empty());
    s.finished(&first[0].stack);

    let second = s.next_due(at("2026-01-01T02:30:00Z"));
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].stack, first[0].stack);
    assert_eq!(second[0].tick, at("2026-01-01T01:00:00Z"));
    s.finished(&second[0].stack);

    // The 02:00 tick of the second stack passed while it waited: its run at 02:30 covers
    // it, so its next run is at 03:00. The first stack's 02:00 tick is still owed.
    let third = s.next_due(at("2026-01-01T02:30:00Z"));
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].stack, first[0].stack);
    assert_eq!(third[0].tick, at("2026-01-01T02:00:00Z"));
    s.finished(&third[0].stack);
    assert_eq!(s.next_wake(), Some(at("2026-01-01T03:00:00Z")));
}

#[test]
fn a_reload_keeps_a_waiting_stack_in_its_place() {
    let start = at("2026-01-01T00:30:00Z");
    let entries = || vec![entry("a", "0 * * * *", None), entry("b", "0 * * * *", None)];
    let mut s = Scheduler::new(entries(), 1, Jitter::NONE, start);
    let first = s.next_due(at("2026-01-01T01:00:00Z"));
    assert_eq!(first.len(), 1);
    // The config is reloaded while the other stack waits for the only slot.
    for e in entries() {
        s.insert(e, at("2026-01-01T01:10:00Z"));
    }
    assert_eq!(s.waiting(at("2026-01-01T01:10:00Z")), 1);
    s.finished(&first[0].stack);
    let second = s.next_due(at("2026-01-01T01:11:00Z"));
    assert_eq!(second.len(), 1, "the waiting stack was not dropped");
    assert_eq!(second[0].tick, at("2026-01-01T01:00:00Z"));

    // A changed schedule does re-plan, and one for a running stack applies after it.
    s.insert(
        entry(&second[0].stack, "30 * * * *", None),
        at("2026-01-01T01:12:00Z"),
    );
    s.finished(&second[0].stack);
    s.insert(
        entry(&first[0].stack, "20 * * * *", None),
        at("2026-01-01T01:12:00Z"),
    );
    assert_eq!(s.next_wake(), Some(at("2026-01-01T01:20:00Z")));
    let third = s.next_due(at("2026-01-01T01:30:00Z"));
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].stack, first[0].stack);
    s.finished(&third[0].stack);
    let fourth = s.next_due(at("2026-01-01T01:30:00Z"));
    assert_eq!(fourth[0].stack, second[0].stack);
    assert_eq!(fourth[0].tick, at("2026-01-01T01:30:00Z"));
}

#[test]
fn missed_ticks_run_once_on_start() {
    // Down from 05:00 to 13:00: the 06:00 and 12:00 ticks were missed.
    let start = at("2026-01-01T13:00:00Z");
    let entries = vec![
        entry("missed", "0 */6 * * *", Some("2026-01-01T00:01:00Z")),
        entry("fresh", "0 */6 * * *", Some("2026-01-01T12:02:00Z")),
        entry("new", "0 */6 * * *", None),
    ];
    let mut s = Scheduler::new(entries, 10, Jitter::NONE, start);
    let due = s.next_due(start);
    assert_eq!(
        due,
        vec![Due {
            stack: "missed".to_string(),
            tick: at("2026-01-01T12:00:00Z"),
            fire_at: start,
            catch_up: true,
        }]
    );
    s.finished("missed");
    assert!(s.next_due(at("2026-01-01T17:59:59Z")).is_empty());
    let mut next: Vec<String> = s
        .next_due(at("2026-01-01T18:00:00Z"))
        .into_iter()
        .map(|d| d.stack)
        .collect();
    next.sort();
    assert_eq!(next, ["fresh", "missed", "new"]);
}

#[test]
fn removed_stacks_stop_and_reinserted_ones_resume() {
    let start = at("2026-01-01T00:30:00Z");
    let mut s = Scheduler::new(vec![entry("a", "0 * * * *", None)], 4, Jitter::NONE, start);
    s.remove("a");
    assert_eq!(s.next_wake(), None);
    assert!(s.next_due(at("2026-01-01T05:00:00Z")).is_empty());
    s.insert(entry("a", "30 * * * *", None), at("2026-01-01T05:00:00Z"));
    assert_eq!(s.next_wake(), Some(at("2026-01-01T05:30:00Z")));
}

/// What the stand-in engine saw: start times per stack and the highest concurrency.
#[derive(Default)]
struct Seen {
    starts: HashMap<String, Vec<DateTime<Utc>>>,
    fire_ats: Vec<DateTime<Utc>>,
    running: usize,
    max_running: usize,
}

/// Spawns the scheduler and an engine stand-in whose checks each take `check_time`.
fn drive(
    scheduler: Scheduler,
    start: DateTime<Utc>,
    check_time: Duration,
) -> (Arc<Mutex<Seen>>, CancellationToken) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<DueCheck>(16);
    let (_updates_tx, updates) = mpsc::channel(1);
    tokio::spawn(scheduler.run(start, shutdown.clone(), tx, updates));
    let engine_seen = seen.clone();
    tokio::spawn(async move {
        let base = Instant::now();
        while let Some(check) = rx.recv().await {
            let now = start + chrono::Duration::from_std(base.elapsed()).expect("elapsed");
            {
                let mut seen = engine_seen.lock().expect("lock");
                seen.starts
                    .entry(check.due.stack.clone())
                    .or_default()
                    .push(now);
                seen.fire_ats.push(check.due.fire_at);
                seen.running += 1;
                seen.max_running = seen.max_running.max(seen.running);
            }
            let task_seen = engine_seen.clone();
            tokio::spawn(async move {
                tokio::time::sleep(check_time).await;
                // Decrement before the slot is freed, so the count never over-reports.
                task_seen.lock().expect("lock").running -= 1;
                check.completion.finish();
            });
        }
    });
    (seen, shutdown)
}

async fn advance_to(start: DateTime<Utc>, base: Instant, until: DateTime<Utc>) {
    let target = base + (until - start).to_std().expect("future");
    tokio::time::sleep_until(target).await;
}

#[tokio::test(start_paused = true)]
async fn a_thousand_stacks_on_one_expression_are_spread_and_capped() {
    let start = at("2026-01-01T05:00:00Z");
    let base = Instant::now();
    let entries: Vec<Entry> = (0..1000)
        .map(|i| entry(&format!("repo:stacks/{i:04}"), "0 */6 * * *", None))
        .collect();
    let cap = 20;
    let scheduler = Scheduler::new(entries, cap, Jitter::default(), start);
    let (seen, shutdown) = drive(scheduler, start, Duration::from_secs(5));

    advance_to(start, base, at("2026-01-01T07:00:00Z")).await;
    shutdown.cancel();
    let seen = seen.lock().expect("lock");
    assert!(seen.max_running <= cap, "max running {}", seen.max_running);
    assert_eq!(seen.max_running, cap, "the cap was reached at some point");
    assert_eq!(seen.starts.len(), 1000, "every stack ran");
    let tick = at("2026-01-01T06:00:00Z");
    let window_end = tick + chrono::Duration::minutes(5);
    let mut per_minute = [0usize; 5];
    for (stack, starts) in &seen.starts {
        assert_eq!(starts.len(), 1, "{stack} ran {starts:?}");
        assert!(starts[0] >= tick, "{stack} started early at {}", starts[0]);
    }
    for fire_at in &seen.fire_ats {
        assert!(*fire_at >= tick && *fire_at < window_end, "{fire_at}");
        per_minute[((*fire_at - tick).num_seconds() / 60) as usize] += 1;
    }
    // Spread over the whole five-minute window, not bunched at the tick.
    for (minute, count) in per_minute.iter().enumerate() {
        assert!(
            (120..=280).contains(count),
            "minute {minute}: {count} stacks"
        );
    }
    let same_second = seen
        .fire_ats
        .iter()
        .fold(HashMap::<i64, usize>::new(), |mut m, t| {
            *m.entry(t.timestamp()).or_default() += 1;
            m
        });
    let worst = same_second.values().max().copied().unwrap_or(0);
    assert!(
        worst < 12,
        "{worst} stacks meant to fire in the same second"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_a_missed_tick_runs_each_stack_once() {
    // The service stopped at 05:30 after checking everything at 00:00+jitter and comes back
    // at 13:00, after the 06:00 and 12:00 ticks.
    let start = at("2026-01-01T13:00:00Z");
    let base = Instant::now();
    let entries: Vec<Entry> = (0..200)
        .map(|i| {
            entry(
                &format!("repo:stacks/{i:03}"),
                "0 */6 * * *",
                Some("2026-01-01T00:03:00Z"),
            )
        })
        .collect();
    let scheduler = Scheduler::new(entries, 8, Jitter::default(), start);
    let (seen, shutdown) = drive(scheduler, start, Duration::from_secs(30));

    advance_to(start, base, at("2026-01-01T17:59:00Z")).await;
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.starts.len(), 200);
        for (stack, starts) in &seen.starts {
            assert_eq!(starts.len(), 1, "{stack} ran {starts:?}");
        }
        assert!(seen.max_running <= 8);
    }
    // The regular schedule resumes: one more run each after the 18:00 tick.
    advance_to(start, base, at("2026-01-01T19:00:00Z")).await;
    shutdown.cancel();
    let seen = seen.lock().expect("lock");
    for (stack, starts) in &seen.starts {
        assert_eq!(starts.len(), 2, "{stack} ran {starts:?}");
        assert!(starts[1] >= at("2026-01-01T18:00:00Z"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_completion_frees_its_slot() {
    let start = at("2026-01-01T00:59:00Z");
    let entries = vec![entry("a", "0 * * * *", None), entry("b", "0 * * * *", None)];
    let scheduler = Scheduler::new(entries, 1, Jitter::NONE, start);
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(4);
    let (_updates_tx, updates) = mpsc::channel(1);
    tokio::spawn(scheduler.run(start, shutdown.clone(), tx, updates));
    let first = rx.recv().await.expect("first check");
    // While the first holds the only slot, nothing else comes.
    let waited = tokio::time::timeout(Duration::from_secs(600), rx.recv()).await;
    assert!(
        waited.is_err(),
        "a second check started while the cap was full"
    );
    drop(first);
    let second = rx.recv().await.expect("second check");
    assert_ne!(second.due.stack, "");
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn updates_add_and_remove_stacks_while_running() {
    let start = at("2026-01-01T00:30:00Z");
    let base = Instant::now();
    let scheduler = Scheduler::new(vec![entry("a", "0 * * * *", None)], 4, Jitter::NONE, start);
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(4);
    let (updates_tx, updates) = mpsc::channel(4);
    tokio::spawn(scheduler.run(start, shutdown.clone(), tx, updates));

    updates_tx
        .send(Update::Upsert(entry("b", "45 * * * *", None)))
        .await
        .expect("send");
    let first = rx.recv().await.expect("b first, at 00:45");
    assert_eq!(first.due.stack, "b");
    assert_eq!(Instant::now() - base, Duration::from_secs(15 * 60));
    first.completion.finish();
    let second = rx.recv().await.expect("a at 01:00");
    assert_eq!(second.due.stack, "a");
    second.completion.finish();

    updates_tx
        .send(Update::Remove("a".to_string()))
        .await
        .expect("send");
    // In the next two hours only b runs.
    for _ in 0..2 {
        let check = rx.recv().await.expect("b again");
        assert_eq!(check.due.stack, "b");
    }
    assert!(Instant::now() - base < Duration::from_secs(3 * 3600));
    shutdown.cancel();
}

//! The reconcile loop: pollers detect new commits and queue plans for the affected stacks;
//! workers claim runs from the store's queue and execute them in dependency order; the drift
//! flow queues scheduled drift checks and records what they find; the outbox sender delivers
//! the resulting messages.

pub mod apply;
mod drift_flow;
mod fetched;
mod followup;
mod logs;
mod outbox;
mod poller;
mod pulls;
mod schedule;
mod worker;

pub use apply::{CommitFacts, Policies, RepoPolicies, Requested};
pub use drift_flow::{DriftFlow, DriftHook, decide};
pub use outbox::{OUTBOX_LEASE, OutboxSender};
pub use poller::{PollOutcome, Poller, backoff};
pub use pulls::{PrRefresh, PrStackView, PrView, PullRequests, views as pr_views};
pub use schedule::{
    Completion, Due, DueCheck, Entry as ScheduleEntry, Jitter, Scheduler, Update as ScheduleUpdate,
};
pub use worker::{Worker, WorkerContext};

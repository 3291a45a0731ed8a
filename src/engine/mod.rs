//! The reconcile loop: pollers detect new commits and queue plans for the affected stacks;
//! workers claim runs from the store's queue and execute them in dependency order.

pub mod apply;
mod drift;
pub mod gate;
mod poller;
mod schedule;
mod worker;

pub use apply::{CommitFacts, Policies, RepoPolicies, Requested};
pub use drift::{
    CheckResult, Drift, DriftCause, DriftRecord, DriftState, DriftedResource, NotificationKind,
    OpenDrift, Transition, assess, transition,
};
pub use poller::{PollOutcome, Poller, backoff};
pub use schedule::{
    Completion, DriftSchedule, Due, DueCheck, Entry as ScheduleEntry, Jitter, ScheduleError,
    Scheduler, Update as ScheduleUpdate,
};
pub use worker::{Worker, WorkerContext};

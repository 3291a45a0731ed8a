//! The reconcile loop: pollers detect new commits and queue plans for the affected stacks;
//! workers claim runs from the store's queue and execute them in dependency order.

mod poller;
mod worker;

pub use poller::{PollOutcome, Poller, backoff};
pub use worker::{Worker, WorkerContext};

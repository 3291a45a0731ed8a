//! Notifications: Slack messages for drift. Rendering (`slack`) is pure and tested alone;
//! delivery (`webhook`) posts to an incoming webhook and hands back a typed outcome the engine
//! stores in its outbox.

pub mod pr_comment;
pub mod slack;
pub mod webhook;

pub use slack::{DEFAULT_MAX_ITEMS, DriftAlert, render};
pub use webhook::{
    Delivery, DeliveryStatus, NotifierError, OutboxPolicy, RetryPolicy, SendFailure, Sent,
    SlackNotifier,
};

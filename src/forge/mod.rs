//! The forge: where pull requests, reviews, comments and commit statuses live. One trait at
//! this boundary ([`Forge`]) and one implementation per forge (`github`); nothing outside this
//! module knows a forge's URLs, headers or payload shapes.

pub mod github;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A future a forge call returns (boxed, so `dyn Forge` works).
pub type ForgeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ForgeError>> + Send + 'a>>;

/// Why a forge call failed. Callers branch on it: a rate limit waits, a rejection is reported,
/// a missing thing is not retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    /// The credentials were refused (401) or could not be made (a missing token, a bad key).
    #[error("forge refused the credentials: {0}")]
    Unauthorized(String),
    /// The thing asked for does not exist, or the credentials may not see it (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The forge asks to wait before the next call (primary or secondary rate limit).
    #[error("rate limited: retry after {}s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// The forge refused the request as invalid (422 and other 4xx), with its reason.
    #[error("forge rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// The forge could not be reached, or answered 5xx or something unreadable.
    #[error("forge unavailable: {0}")]
    Unavailable(String),
}

/// The answer to a conditional request: unchanged since the tag we sent (which costs no rate
/// limit on GitHub), or a new value with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional<T> {
    Unchanged,
    Changed { value: T, etag: Option<String> },
}

/// A pull request as Tidemark needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    /// The author's login.
    pub author: String,
    pub state: PrState,
    pub draft: bool,
    /// The head commit's sha and its branch name.
    pub head_sha: String,
    pub head_ref: String,
    /// The base branch name and its sha when the forge last computed it.
    pub base_ref: String,
    pub base_sha: String,
    /// The head lives in another repository (a fork).
    pub fork: bool,
    pub labels: Vec<String>,
    /// For a merged pull request: the commit the merge made on the base branch.
    pub merge_commit_sha: Option<String>,
    /// Whether the forge says it can be merged (`None`: not computed yet).
    pub mergeable: Option<bool>,
}

/// Open, closed without merging, or merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrState {
    Open,
    Closed,
    Merged,
}

/// One review of a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub id: u64,
    pub user: String,
    pub state: ReviewState,
    /// The head commit the review was made on.
    pub commit_id: String,
}

/// A review's state; a dismissed approval no longer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Commented,
    Dismissed,
    Pending,
}

/// What a user may do in the repository, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    None,
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

impl Permission {
    /// Whether the user may push, and so may run Tidemark's commands and approve applies.
    pub fn can_write(self) -> bool {
        self >= Permission::Write
    }
}

/// A comment on a pull request's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub author: String,
    pub body: String,
}

/// A commit status's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

/// A commit status to set: one per context (`tidemark/plan`) and commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStatus {
    pub context: String,
    pub state: StatusState,
    /// One line; forges cut it (GitHub at 140 characters).
    pub description: String,
    pub target_url: Option<String>,
}

/// A reaction acknowledging a comment command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Seen and accepted: Tidemark works on it.
    Eyes,
    /// Refused.
    Confused,
}

/// The calls Tidemark makes on a forge, for one repository.
pub trait Forge: Send + Sync {
    /// The open pull requests, newest first; `etag` from the last answer makes the request
    /// conditional.
    fn open_pull_requests<'a>(
        &'a self,
        etag: Option<&'a str>,
    ) -> ForgeFuture<'a, Conditional<Vec<PullRequest>>>;
    /// One pull request, whatever its state.
    fn pull_request(&self, number: u64) -> ForgeFuture<'_, PullRequest>;
    /// The paths its changes touch.
    fn pull_request_files(&self, number: u64) -> ForgeFuture<'_, Vec<String>>;
    /// Every review, oldest first.
    fn reviews(&self, number: u64) -> ForgeFuture<'_, Vec<Review>>;
    /// What `user` may do in the repository.
    fn permission<'a>(&'a self, user: &'a str) -> ForgeFuture<'a, Permission>;
    /// The conversation's comments, oldest first.
    fn comments(&self, number: u64) -> ForgeFuture<'_, Vec<Comment>>;
    fn create_comment<'a>(&'a self, number: u64, body: &'a str) -> ForgeFuture<'a, Comment>;
    fn update_comment<'a>(&'a self, comment_id: u64, body: &'a str) -> ForgeFuture<'a, Comment>;
    fn set_status<'a>(&'a self, sha: &'a str, status: &'a CommitStatus) -> ForgeFuture<'a, ()>;
    fn react(&self, comment_id: u64, reaction: Reaction) -> ForgeFuture<'_, ()>;
}

/// What a forge's webhook said, in the forge's neutral terms. A webhook only nudges: what is
/// planned is read again from git and the forge's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeEvent {
    /// A repository's branch moved.
    Push {
        /// The repository's clone URLs as the payload names them.
        urls: Vec<String>,
        git_ref: String,
    },
    /// A pull request was opened, pushed to, reopened, closed, merged or retargeted.
    PullRequest {
        repository: String,
        number: u64,
        action: String,
    },
    /// A comment on a pull request's conversation (a command, perhaps).
    Comment {
        repository: String,
        number: u64,
        comment: Comment,
    },
    /// A review was submitted, edited or dismissed.
    Review { repository: String, number: u64 },
    /// A ping, or an event Tidemark does not read.
    Ignored { event: String },
}

//! The parts of GitHub's JSON that Tidemark reads, and their mapping into the forge's
//! neutral types. Fields GitHub may leave out or null are optional here.

use serde::Deserialize;

use crate::forge::{Comment, PrState, PullRequest, Review, ReviewState};

#[derive(Debug, Deserialize)]
pub(super) struct User {
    pub login: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Label {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct RepoRef {
    pub full_name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Branch {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub sha: String,
    /// Null when the head's repository (a fork) was deleted.
    pub repo: Option<RepoRef>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Pull {
    pub number: u64,
    pub title: String,
    pub user: Option<User>,
    pub state: String,
    #[serde(default)]
    pub draft: Option<bool>,
    pub head: Branch,
    pub base: Branch,
    #[serde(default)]
    pub labels: Vec<Label>,
    pub merged_at: Option<String>,
    pub merge_commit_sha: Option<String>,
    #[serde(default)]
    pub mergeable: Option<bool>,
}

impl Pull {
    pub(super) fn into_neutral(self) -> PullRequest {
        let fork = match (&self.head.repo, &self.base.repo) {
            (Some(head), Some(base)) => !head.full_name.eq_ignore_ascii_case(&base.full_name),
            // A deleted fork.
            (None, _) => true,
            (Some(_), None) => false,
        };
        let state = if self.merged_at.is_some() {
            PrState::Merged
        } else if self.state == "open" {
            PrState::Open
        } else {
            PrState::Closed
        };
        PullRequest {
            number: self.number,
            title: self.title,
            author: self.user.map(|u| u.login).unwrap_or_default(),
            state,
            draft: self.draft.unwrap_or(false),
            head_sha: self.head.sha,
            head_ref: self.head.ref_,
            base_ref: self.base.ref_,
            base_sha: self.base.sha,
            fork,
            labels: self.labels.into_iter().map(|l| l.name).collect(),
            merge_commit_sha: if state == PrState::Merged {
                self.merge_commit_sha
            } else {
                None
            },
            mergeable: self.mergeable,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PullFile {
    pub filename: String,
    pub previous_filename: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ReviewPayload {
    pub id: u64,
    pub user: Option<User>,
    pub state: String,
    pub commit_id: Option<String>,
}

impl ReviewPayload {
    pub(super) fn into_neutral(self) -> Review {
        let state = match self.state.as_str() {
            "APPROVED" => ReviewState::Approved,
            "CHANGES_REQUESTED" => ReviewState::ChangesRequested,
            "DISMISSED" => ReviewState::Dismissed,
            "PENDING" => ReviewState::Pending,
            _ => ReviewState::Commented,
        };
        Review {
            id: self.id,
            user: self.user.map(|u| u.login).unwrap_or_default(),
            state,
            commit_id: self.commit_id.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PermissionPayload {
    pub permission: String,
    /// `admin`, `maintain`, `write`, `triage` or `read` (newer; preferred when present).
    pub role_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CommentPayload {
    pub id: u64,
    pub user: Option<User>,
    #[serde(default)]
    pub body: Option<String>,
}

impl CommentPayload {
    pub(super) fn into_neutral(self) -> Comment {
        Comment {
            id: self.id,
            author: self.user.map(|u| u.login).unwrap_or_default(),
            body: self.body.unwrap_or_default(),
        }
    }
}

/// GitHub's error body.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub errors: Vec<serde_json::Value>,
}

//! How a pull request is shown by `tidemark prs`, `tidemark pr` and `/api/v1/prs`: its state,
//! Tidemark's comment, and per stack the latest plan of its planned commit and what the merge did.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::store::{ChangeSummary, RunKind, Store};

/// One pull request (the JSON contract of `tidemark prs --format json`, extended).
#[derive(Debug, Clone, Serialize)]
pub struct PrView {
    pub repo: String,
    pub number: i64,
    pub title: String,
    pub author: String,
    /// The head commit the forge last reported.
    pub head: String,
    /// `open`, `closed` or `merged`.
    pub state: String,
    pub comment_id: Option<i64>,
    /// The head the current plans are for, and the commit they ran on.
    pub planned_head: Option<String>,
    pub planned_commit: Option<String>,
    /// Why the head was not planned (a fork, a merge conflict).
    pub skipped: Option<String>,
    pub merge_commit_sha: Option<String>,
    pub stacks: Vec<PrStackView>,
}

/// One stack of a pull request.
#[derive(Debug, Clone, Serialize)]
pub struct PrStackView {
    pub stack: String,
    pub run_id: i64,
    pub status: String,
    pub summary: Option<ChangeSummary>,
    /// What the merge did with the stack's reviewed plan, when it merged.
    pub merge: Option<String>,
    /// The latest apply run of the stack for this pull request.
    pub apply_run_id: Option<i64>,
    pub apply_status: Option<String>,
}

/// The pull requests Tidemark follows; `repo` and `number` narrow the list.
pub async fn views(store: &Store, repo: Option<&str>, number: Option<i64>) -> Result<Vec<PrView>> {
    let mut views = Vec::new();
    for (name, pr) in store.pull_requests(repo, None).await? {
        if number.is_some_and(|n| n != pr.number) {
            continue;
        }
        let runs = store.pr_runs(pr.repo_id, pr.number).await?;
        let merge: BTreeMap<String, String> =
            serde_json::from_str(&pr.merge_result).unwrap_or_default();
        let mut latest = BTreeMap::new();
        for run in runs.iter().filter(|r| {
            r.kind == RunKind::Plan
                && Some(&r.commit) == pr.planned_commit.as_ref()
                && r.reviewed_run_id.is_none()
        }) {
            latest.insert(run.stack.clone(), run);
        }
        let stacks = latest
            .into_iter()
            .map(|(stack, run)| {
                let apply = runs
                    .iter()
                    .rev()
                    .find(|r| r.kind == RunKind::Apply && r.stack == stack);
                PrStackView {
                    run_id: run.id,
                    status: run.status.to_string(),
                    summary: run.change_summary(),
                    merge: merge.get(&stack).cloned(),
                    apply_run_id: apply.map(|a| a.id),
                    apply_status: apply.map(|a| a.status.to_string()),
                    stack,
                }
            })
            .collect();
        views.push(PrView {
            repo: name,
            number: pr.number,
            title: pr.title,
            author: pr.author,
            head: pr.head_sha,
            state: pr.state,
            comment_id: pr.comment_id,
            planned_head: pr.planned_head,
            planned_commit: pr.planned_commit,
            skipped: pr.skipped,
            merge_commit_sha: pr.merge_commit_sha,
            stacks,
        });
    }
    Ok(views)
}

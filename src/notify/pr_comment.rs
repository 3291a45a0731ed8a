//! PLACEHOLDER (replaced by the comment branch): the pull-request comment.

use crate::plan::PlanSummary;
use crate::policy::Verdict;

pub const MARKER: &str = "<!-- tidemark:pr-comment -->";
pub const BUDGET: usize = 65_536;

pub struct PrComment<'a> {
    pub repo: &'a str,
    pub number: u64,
    pub head_sha: &'a str,
    pub base_url: Option<&'a str>,
    pub stacks: Vec<StackEntry<'a>>,
    pub notes: Vec<String>,
}

pub struct StackEntry<'a> {
    pub stack: &'a str,
    pub run_id: Option<i64>,
    pub status: StackStatus,
    pub summary: Option<&'a PlanSummary>,
    pub verdict: Option<&'a Verdict>,
    pub error: Option<&'a str>,
    pub plan_text: Option<&'a str>,
    pub apply: Option<&'a str>,
}

pub enum StackStatus {
    Queued,
    Running,
    Planned { changes: bool },
    Failed,
    Cancelled,
    Superseded,
    Applied,
    ApplyFailed,
    NotApplied { reason: String },
}

pub fn render(comment: &PrComment) -> String {
    let mut out = format!("{MARKER}\n### Tidemark: {} stacks\n", comment.stacks.len());
    for note in &comment.notes {
        out.push_str(&format!("{note}\n"));
    }
    for s in &comment.stacks {
        out.push_str(&format!(
            "- {} {:?} {}\n",
            s.stack,
            s.run_id,
            s.apply.unwrap_or("")
        ));
    }
    out
}

pub fn is_tidemark_comment(body: &str) -> bool {
    body.starts_with(MARKER)
}

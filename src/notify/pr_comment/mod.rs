//! The one comment Tidemark keeps on a pull request, rendered as GitHub-flavoured Markdown
//! (pure: no IO, no clock). A hidden marker opens it so it is found again and edited in place.
//!
//! GitHub refuses bodies over 65,536 characters, so the body is packed by priority within that
//! budget: the summary table, failures, policy denials, every destroy and replacement by
//! address, then each stack's details, which shrink from plan text to resource lists to
//! nothing as space runs out; whatever is left out is counted and linked to Tidemark's pages.

mod text;

use crate::plan::PlanSummary;
use crate::policy::{Blocking, Verdict};

use text::{cell, clip, code, escape, fenced};

/// The hidden first line of every Tidemark comment.
pub const MARKER: &str = "<!-- tidemark:pr-comment -->";
/// GitHub's limit on a comment body, in characters.
pub const BUDGET: usize = 65_536;

/// What the comment shows.
#[derive(Debug, Clone)]
pub struct PrComment<'a> {
    /// Tidemark's name for the repository.
    pub repo: &'a str,
    pub number: u64,
    /// The head the plans are for.
    pub head_sha: &'a str,
    /// Tidemark's base URL, for links to runs; `None`: no links.
    pub base_url: Option<&'a str>,
    pub stacks: Vec<StackEntry<'a>>,
    /// Lines shown under the summary (why a head was not planned, what a merge did).
    pub notes: Vec<String>,
}

/// One stack of the pull request.
#[derive(Debug, Clone)]
pub struct StackEntry<'a> {
    pub stack: &'a str,
    pub run_id: Option<i64>,
    pub status: StackStatus,
    pub summary: Option<&'a PlanSummary>,
    pub verdict: Option<&'a Verdict>,
    /// A failed run's error.
    pub error: Option<&'a str>,
    /// The redacted plan output.
    pub plan_text: Option<&'a str>,
    /// What the merge did (or what an apply is doing), in words.
    pub apply: Option<&'a str>,
}

/// Where a stack's plan is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackStatus {
    Queued,
    Running,
    Planned { changes: bool },
    Failed,
    Cancelled,
    Superseded,
}

impl StackStatus {
    fn label(&self) -> &'static str {
        match self {
            StackStatus::Queued => "⏳ queued",
            StackStatus::Running => "🔄 planning",
            StackStatus::Planned { changes: true } => "✅ changes",
            StackStatus::Planned { changes: false } => "✅ no changes",
            StackStatus::Failed => "❌ failed",
            StackStatus::Cancelled => "⛔ cancelled",
            StackStatus::Superseded => "⏭ superseded",
        }
    }
}

/// Whether a body is a Tidemark comment.
pub fn is_tidemark_comment(body: &str) -> bool {
    body.trim_start().starts_with(MARKER)
}

/// A stack's detail, from most to least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    PlanText(usize),
    Resources,
    None,
}

/// Renders the comment; the result never exceeds [`BUDGET`] characters.
pub fn render(comment: &PrComment) -> String {
    let links = Links {
        base: comment.base_url.map(|b| b.trim_end_matches('/')),
        repo: comment.repo,
        number: comment.number,
    };
    let footer = footer(comment, &links);
    // Sections in priority order; each gets what is left after the ones before it.
    let mut out = Out::new(BUDGET - footer.chars().count());
    out.push(&header(comment));
    out.push_table(comment, &links);
    for note in &comment.notes {
        out.push(&format!("> {}\n", escape(note)));
    }
    out.push("\n");
    out.push_list("Failures", failures(comment));
    out.push_list("Policy denials", denials(comment));
    out.push_list("Destroys and replacements", destroys(comment));
    out.push_details(comment, &links);
    let mut body = out.finish();
    body.push_str(&footer);
    debug_assert!(body.chars().count() <= BUDGET);
    body
}

struct Links<'a> {
    base: Option<&'a str>,
    repo: &'a str,
    number: u64,
}

impl Links<'_> {
    fn run(&self, id: Option<i64>) -> Option<String> {
        Some(format!("{}/api/v1/runs/{}", self.base?, id?))
    }

    fn pr(&self) -> Option<String> {
        Some(format!(
            "{}/api/v1/prs/{}/{}",
            self.base?, self.repo, self.number
        ))
    }
}

fn header(comment: &PrComment) -> String {
    let (mut add, mut change, mut destroy, mut replace) = (0, 0, 0, 0);
    for summary in comment.stacks.iter().filter_map(|s| s.summary) {
        add += summary.summary.add;
        change += summary.summary.change;
        destroy += summary.summary.destroy;
        replace += summary.summary.replace;
    }
    let short = comment.head_sha.get(..12).unwrap_or(comment.head_sha);
    let stacks = match comment.stacks.len() {
        0 => "no stack".to_string(),
        1 => "1 stack".to_string(),
        n => format!("{n} stacks"),
    };
    format!(
        "{MARKER}\n### Tidemark: {stacks} for `{short}`: +{add} ~{change} -{destroy} ±{replace}\n\n"
    )
}

fn footer(comment: &PrComment, links: &Links) -> String {
    let short = comment.head_sha.get(..12).unwrap_or(comment.head_sha);
    let all = links
        .pr()
        .map(|url| format!(" · [every run on Tidemark]({url})"))
        .unwrap_or_default();
    format!(
        "\n---\n<sub>Tidemark updates this comment in place for each push (now `{short}`); `tidemark help` lists the commands.{all}</sub>\n"
    )
}

fn policy_cell(verdict: Option<&Verdict>) -> String {
    match verdict {
        None => "–".into(),
        Some(v) => match v.blocking {
            Blocking::None if v.results.is_empty() => "passed".into(),
            Blocking::None => format!("passed ({} warning(s))", v.results.len()),
            Blocking::Soft => "❌ blocked (soft)".into(),
            Blocking::Hard => "❌ blocked (hard)".into(),
        },
    }
}

fn failures(comment: &PrComment) -> Vec<String> {
    comment
        .stacks
        .iter()
        .filter(|s| s.status == StackStatus::Failed)
        .map(|s| {
            let error = s.error.unwrap_or("the run failed without an error message");
            format!("- {}: {}", code(s.stack), escape(&clip(error, 600)))
        })
        .collect()
}

fn denials(comment: &PrComment) -> Vec<String> {
    let mut lines = Vec::new();
    for s in &comment.stacks {
        let Some(verdict) = s.verdict else { continue };
        for result in verdict.failures() {
            lines.push(format!(
                "- {}: **{}** {} ({})",
                code(s.stack),
                result.level.as_str(),
                escape(&clip(&result.message, 400)),
                escape(&result.policy)
            ));
        }
        for error in &verdict.errors {
            lines.push(format!(
                "- {}: **error** {}",
                code(s.stack),
                escape(&clip(error, 400))
            ));
        }
    }
    lines
}

fn destroys(comment: &PrComment) -> Vec<String> {
    let mut lines = Vec::new();
    for s in &comment.stacks {
        let Some(summary) = s.summary else { continue };
        for r in &summary.resources {
            let deletes = r.actions.iter().any(|a| a == "delete");
            if !deletes {
                continue;
            }
            let what = if r.actions.iter().any(|a| a == "create") {
                "replace"
            } else {
                "destroy"
            };
            lines.push(format!(
                "- {} {} {}",
                what,
                code(&r.address),
                format_args!("in {}", code(s.stack))
            ));
        }
    }
    lines
}

/// What a change does, in one word.
fn action_word(actions: &[String]) -> &'static str {
    let has = |a: &str| actions.iter().any(|x| x == a);
    match (has("create"), has("delete"), has("update")) {
        (true, true, _) => "replace",
        (true, false, _) => "create",
        (false, true, _) => "destroy",
        (_, _, true) => "update",
        _ => "read",
    }
}

/// A plan line with its change marker moved to the first column, so the `diff` highlighting
/// colours it (terraform indents `+`, `-` and `~`; `~` becomes `!`).
fn diff_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let indent = line.len() - trimmed.len();
    for (marker, shown) in [
        ("-/+ ", "!"),
        ("+/- ", "!"),
        ("+ ", "+"),
        ("- ", "-"),
        ("~ ", "!"),
    ] {
        if let Some(rest) = trimmed.strip_prefix(marker) {
            return format!("{shown}{}{rest}", " ".repeat(indent + marker.len() - 1));
        }
    }
    line.to_string()
}

/// Text inside an HTML element.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The body under construction, with what is left of the budget.
struct Out {
    text: String,
    left: usize,
}

impl Out {
    fn new(budget: usize) -> Out {
        Out {
            text: String::new(),
            left: budget,
        }
    }

    fn fits(&self, piece: &str) -> bool {
        piece.chars().count() <= self.left
    }

    /// Appends `piece` if it fits; returns whether it did.
    fn push(&mut self, piece: &str) -> bool {
        let n = piece.chars().count();
        if n > self.left {
            return false;
        }
        self.text.push_str(piece);
        self.left -= n;
        true
    }

    fn finish(self) -> String {
        self.text
    }

    /// The summary table. At most half the budget: the rows that do not fit are summed up in
    /// one last row.
    fn push_table(&mut self, comment: &PrComment, links: &Links) {
        if comment.stacks.is_empty() {
            return;
        }
        self.push("| Stack | Plan | + | ~ | - | ± | Policy | Apply |\n|---|---|--:|--:|--:|--:|---|---|\n");
        let cap = self.left / 2;
        let mut used = 0;
        for (i, s) in comment.stacks.iter().enumerate() {
            let counts = s.summary.map(|p| p.summary).unwrap_or_default();
            let stack = match links.run(s.run_id) {
                Some(url) => format!("[{}]({url})", code(s.stack)),
                None => code(s.stack),
            };
            let row = format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                stack,
                s.status.label(),
                counts.add,
                counts.change,
                counts.destroy,
                counts.replace,
                policy_cell(s.verdict),
                cell(&clip(s.apply.unwrap_or("–"), 200)),
            );
            let n = row.chars().count();
            // Room for the closing "and N more" row.
            if used + n + 200 > cap {
                let rest = &comment.stacks[i..];
                let mut total = crate::plan::Counts::default();
                for p in rest.iter().filter_map(|s| s.summary) {
                    total.add += p.summary.add;
                    total.change += p.summary.change;
                    total.destroy += p.summary.destroy;
                    total.replace += p.summary.replace;
                }
                let more = links
                    .pr()
                    .map(|url| format!("[… and {} more stacks]({url})", rest.len()))
                    .unwrap_or_else(|| format!("… and {} more stacks", rest.len()));
                self.push(&format!(
                    "| {more} | | {} | {} | {} | {} | | |\n",
                    total.add, total.change, total.destroy, total.replace
                ));
                break;
            }
            used += n;
            self.push(&row);
        }
        self.push("\n");
    }

    /// A titled list; the lines that do not fit are counted.
    fn push_list(&mut self, title: &str, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let total = lines.len();
        if !self.push(&format!("#### {title} ({total})\n")) {
            return;
        }
        for (i, line) in lines.iter().enumerate() {
            let more = format!("- … and {} more\n", total - i);
            if self.left < line.chars().count() + 1 + more.chars().count() + 1 {
                self.push(&more);
                break;
            }
            self.push(line);
            self.push("\n");
        }
        self.push("\n");
    }

    /// One collapsed section per stack, at the richest level of detail that fits them all.
    fn push_details(&mut self, comment: &PrComment, links: &Links) {
        let stacks: Vec<&StackEntry> = comment
            .stacks
            .iter()
            .filter(|s| s.summary.is_some() || s.plan_text.is_some())
            .collect();
        if stacks.is_empty() {
            return;
        }
        let share = self.left / stacks.len().max(1);
        let levels = [
            Detail::PlanText(share.saturating_sub(400).min(20_000)),
            Detail::Resources,
            Detail::None,
        ];
        for level in levels {
            if level == Detail::None {
                break;
            }
            let sections: Vec<String> = stacks.iter().map(|s| section(s, level)).collect();
            let size: usize = sections.iter().map(|s| s.chars().count()).sum();
            if size <= self.left {
                for s in sections {
                    self.push(&s);
                }
                return;
            }
        }
        // Even resource lists do not fit: as many as fit, then a pointer to the rest.
        let mut shown = 0;
        for s in &stacks {
            let piece = section(s, Detail::Resources);
            if !self.fits(&piece) || self.left < piece.chars().count() + 200 {
                break;
            }
            self.push(&piece);
            shown += 1;
        }
        if shown < stacks.len() {
            let rest = stacks.len() - shown;
            let line = match links.pr() {
                Some(url) => format!("Details of {rest} more stack(s) are on [Tidemark]({url}).\n"),
                None => format!("Details of {rest} more stack(s) did not fit in this comment.\n"),
            };
            self.push(&line);
        }
    }
}

/// A stack's collapsed section at one level of detail.
fn section(s: &StackEntry, level: Detail) -> String {
    let counts = s.summary.map(|p| p.summary).unwrap_or_default();
    let mut out = format!(
        "<details><summary><code>{}</code>: +{} ~{} -{} ±{}</summary>\n\n",
        html(s.stack),
        counts.add,
        counts.change,
        counts.destroy,
        counts.replace
    );
    if let Some(summary) = s.summary {
        if summary.resources.is_empty() && summary.outputs.is_empty() {
            out.push_str("No changes.\n");
        }
        for (listed, r) in summary.resources.iter().enumerate() {
            if listed == 500 {
                out.push_str(&format!(
                    "- … and {} more\n",
                    summary.resources.len() - listed
                ));
                break;
            }
            out.push_str(&format!(
                "- {} {}\n",
                action_word(&r.actions),
                code(&r.address)
            ));
        }
        for o in summary.outputs.iter().take(100) {
            out.push_str(&format!(
                "- {} output {}\n",
                action_word(&o.actions),
                code(&o.name)
            ));
        }
    }
    if let Some(verdict) = s.verdict {
        for result in verdict.results.iter().take(20) {
            out.push_str(&format!(
                "- policy {} ({}): {}\n",
                escape(&result.policy),
                result.level.as_str(),
                escape(&clip(&result.message, 300))
            ));
        }
    }
    if let (Detail::PlanText(limit), Some(text)) = (level, s.plan_text)
        && limit > 0
        && !text.trim().is_empty()
    {
        out.push('\n');
        let text: Vec<String> = text.trim_matches('\n').lines().map(diff_line).collect();
        out.push_str(&fenced(&clip(&text.join("\n"), limit), "diff"));
    }
    out.push_str("\n</details>\n\n");
    out
}

#[cfg(test)]
mod tests;

//! Comment commands: `tidemark plan [-p STACK]`, `tidemark apply [-p STACK]` (only where the
//! repository allows applies before the merge), `tidemark unlock` and `tidemark help`. Only
//! users with write permission may run them; the others get a short reply saying why. Every
//! command is acknowledged with a reaction.

use anyhow::Result;
use tracing::info;

use super::PullRequests;
use crate::forge::{Comment, Reaction};
use crate::review::{MergeAction, MergeFacts};
use crate::store::{RunKind, RunStatus};

/// A command parsed from a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Plan { stacks: Vec<String> },
    Apply { stacks: Vec<String> },
    Unlock,
    Help,
}

const HELP: &str = "Tidemark commands (write permission needed):\n\
    - `tidemark plan [-p STACK]...`: plan the pull request again (all affected stacks, or these)\n\
    - `tidemark apply [-p STACK]...`: apply its reviewed plans before the merge (only where `apply_before_merge = true`)\n\
    - `tidemark unlock`: release the locks interrupted applies left on its stacks\n\
    - `tidemark help`: this text";

/// Reads a command from a comment's first line: `None` when the comment is not one,
/// `Err` with the reply when it is malformed. Pure.
pub fn parse(body: &str) -> Option<Result<Command, String>> {
    let line = body.trim_start().lines().next()?.trim();
    let mut words = line.split_whitespace();
    if words.next()? != "tidemark" {
        return None;
    }
    let verb = words.next().unwrap_or("help");
    let rest: Vec<&str> = words.collect();
    let stacks = || -> Result<Vec<String>, String> {
        let mut stacks = Vec::new();
        let mut args = rest.iter();
        while let Some(arg) = args.next() {
            match *arg {
                "-p" | "--stack" => match args.next() {
                    Some(stack) => stacks.push(stack.trim_end_matches('/').to_string()),
                    None => return Err(format!("`{arg}` needs a stack path\n\n{HELP}")),
                },
                other => return Err(format!("unknown argument `{other}`\n\n{HELP}")),
            }
        }
        Ok(stacks)
    };
    Some(match verb {
        "plan" => stacks().map(|stacks| Command::Plan { stacks }),
        "apply" => stacks().map(|stacks| Command::Apply { stacks }),
        "unlock" if rest.is_empty() => Ok(Command::Unlock),
        "help" => Ok(Command::Help),
        other => Err(format!("unknown command `{other}`\n\n{HELP}")),
    })
}

impl PullRequests {
    /// Acts on a comment on pull request `number`, if it is a command.
    pub async fn command(&self, number: i64, comment: &Comment) -> Result<()> {
        if crate::notify::pr_comment::is_tidemark_comment(&comment.body) {
            return Ok(());
        }
        let Some(parsed) = parse(&comment.body) else {
            return Ok(());
        };
        let permission = self.forge.permission(&comment.author).await?;
        if !permission.can_write() {
            self.forge.react(comment.id, Reaction::Confused).await?;
            return self
                .reply(
                    number,
                    &format!(
                        "@{}: Tidemark commands need write permission on {}; yours is {}.",
                        comment.author,
                        self.github.repository,
                        permission_name(permission)
                    ),
                )
                .await;
        }
        let command = match parsed {
            Ok(command) => command,
            Err(reply) => {
                self.forge.react(comment.id, Reaction::Confused).await?;
                return self.reply(number, &reply).await;
            }
        };
        self.forge.react(comment.id, Reaction::Eyes).await?;
        info!(repo = %self.repo.name, pr = number, user = %comment.author, ?command, "pull request command");
        match command {
            Command::Help => self.reply(number, HELP).await,
            Command::Plan { stacks } => {
                let pr = self.forge.pull_request(number as u64).await?;
                self.store.upsert_pull_request(self.repo_id, &pr).await?;
                self.plan_only(&pr, &stacks).await?;
                self.refresh(number).await
            }
            Command::Apply { stacks } => {
                self.apply_before_merge(number, &comment.author, &stacks)
                    .await
            }
            Command::Unlock => {
                let row = self.row(number).await?;
                let runs = self.store.pr_runs(self.repo_id, number).await?;
                let mut released = Vec::new();
                let mut stacks: Vec<&str> = runs.iter().map(|r| r.stack.as_str()).collect();
                stacks.sort_unstable();
                stacks.dedup();
                for stack in stacks {
                    if self.store.unlock(Some(&self.repo.name), stack).await? > 0 {
                        released.push(format!("`{stack}`"));
                    }
                }
                let text = if released.is_empty() {
                    format!("No stack of pull request #{} was locked.", row.number)
                } else {
                    format!("Unlocked {}.", released.join(", "))
                };
                self.reply(number, &text).await
            }
        }
    }

    /// `tidemark apply`: applies the current reviewed plans now, when the repository allows it
    /// and the apply requirements hold.
    async fn apply_before_merge(&self, number: i64, user: &str, only: &[String]) -> Result<()> {
        if !self.github.apply_before_merge {
            return self
                .reply(
                    number,
                    "Applies happen when the pull request merges here (`apply_before_merge` is off).",
                )
                .await;
        }
        let row = self.row(number).await?;
        let (Some(planned_commit), Some(head)) = (&row.planned_commit, &row.planned_head) else {
            return self
                .reply(number, "Nothing is planned for this pull request yet.")
                .await;
        };
        let pr = self.forge.pull_request(number as u64).await?;
        let approvers = self.read_approvals(number, head).await?;
        let runs = self.store.pr_runs(self.repo_id, number).await?;
        let mut lines = Vec::new();
        let mut latest = std::collections::BTreeMap::new();
        for run in runs.iter().filter(|r| {
            r.kind == RunKind::Plan && &r.commit == planned_commit && r.reviewed_run_id.is_none()
        }) {
            latest.insert(run.stack.clone(), run);
        }
        for (stack, plan) in latest {
            if !only.is_empty() && !only.contains(&stack) {
                continue;
            }
            let artifact = self.store.artifact(plan.id).await?;
            let policy_passed = match (&artifact, self.store.verdict(plan.id).await?) {
                (Some(a), Some((digest, verdict))) => {
                    digest == a.digest && verdict.blocking == crate::policy::Blocking::None
                }
                _ => false,
            };
            let facts = MergeFacts {
                requirements: self.github.apply_requirements.clone(),
                approvers: approvers.clone(),
                policy_passed,
                mergeable: pr.mergeable,
                plan_usable: plan.status == RunStatus::Succeeded && artifact.is_some(),
                inputs_unchanged: true,
                serial_unchanged: true,
            };
            let text = match crate::review::merge_action(&facts) {
                MergeAction::Refuse { reasons } => format!("not applied: {}", reasons.join("; ")),
                _ => {
                    let digest = artifact.map(|a| a.digest).unwrap_or_default();
                    let why = format!("`tidemark apply` by {user} before the merge");
                    self.apply_reviewed(number, plan, &digest, &approvers, &why)
                        .await?
                }
            };
            lines.push(format!("- `{stack}`: {text}"));
        }
        if lines.is_empty() {
            lines.push("No plan of this pull request matches.".into());
        }
        self.work.notify_waiters();
        self.reply(number, &lines.join("\n")).await?;
        self.refresh(number).await
    }

    /// A short reply of its own (the plan comment stays the one comment Tidemark edits).
    async fn reply(&self, number: i64, text: &str) -> Result<()> {
        self.forge.create_comment(number as u64, text).await?;
        Ok(())
    }
}

/// A permission as GitHub writes it (`read`, `triage`, ...).
fn permission_name(permission: crate::forge::Permission) -> String {
    serde_json::to_value(permission)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_from_the_first_line() {
        assert_eq!(parse("LGTM"), None);
        assert_eq!(parse("please run tidemark plan"), None);
        assert_eq!(
            parse("tidemark plan"),
            Some(Ok(Command::Plan { stacks: vec![] }))
        );
        assert_eq!(
            parse("  tidemark plan -p stacks/a/ --stack stacks/b\nthanks"),
            Some(Ok(Command::Plan {
                stacks: vec!["stacks/a".into(), "stacks/b".into()]
            }))
        );
        assert_eq!(
            parse("tidemark apply"),
            Some(Ok(Command::Apply { stacks: vec![] }))
        );
        assert_eq!(parse("tidemark unlock"), Some(Ok(Command::Unlock)));
        assert_eq!(parse("tidemark"), Some(Ok(Command::Help)));
        assert!(
            matches!(parse("tidemark destroy"), Some(Err(reply)) if reply.starts_with("unknown command `destroy`"))
        );
        assert!(
            matches!(parse("tidemark plan -p"), Some(Err(reply)) if reply.contains("needs a stack path"))
        );
    }
}

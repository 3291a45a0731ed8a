//! `tidemark vars STACK [--env E]`: which variable sets of the server config a stack's runs
//! get, in each phase, and the names they set (never a value: secrets are not even read).

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{ConfigArg, Format, print_json};
use crate::store::Store;
use crate::variables::{self, Phase, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The stack's path from the repository root.
    pub stack: String,
    /// The environment of the run.
    #[arg(long = "env")]
    pub environment: Option<String>,
    /// The repository (for the stack's tags, as the service recorded them).
    #[arg(long)]
    pub repo: Option<String>,
    /// Tags to match as well as those the service recorded (e.g. before the first sync).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Serialize)]
struct SetView {
    set: String,
    names: Vec<String>,
}

#[derive(Debug, Serialize)]
struct View {
    stack: String,
    environment: Option<String>,
    tags: Vec<String>,
    plan: Vec<SetView>,
    apply: Vec<SetView>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = args.config.load()?;
    let mut tags = args.tags.clone();
    // `stacks/app@prod` names the instance as `stacks/app --env prod` does.
    let (dir, named) = crate::stacks::split_instance(&args.stack);
    let environment = args.environment.as_deref().or(named);
    if let Some(repo) = &args.repo {
        let instance = crate::stacks::instance_path(dir, environment);
        let recorded = super::runtime()?.block_on(async {
            let store = Store::open(&config.database).await?;
            store.stack_settings(repo, &instance).await
        })?;
        tags.extend(recorded.tags);
    }
    tags.sort();
    tags.dedup();
    let sets_for = |phase| -> Vec<SetView> {
        let target = Target {
            stack: dir,
            tags: &tags,
            environment,
            phase,
            pull_request: false,
        };
        variables::matching(&config.variables, &target)
            .into_iter()
            .map(|s| SetView {
                set: s.name.clone(),
                names: s.names(),
            })
            .collect()
    };
    let view = View {
        stack: dir.to_string(),
        environment: environment.map(String::from),
        plan: sets_for(Phase::Plan),
        apply: sets_for(Phase::Apply),
        tags,
    };
    match args.format {
        Format::Json => print_json(&view)?,
        Format::Text => {
            for (phase, sets) in [("plan", &view.plan), ("apply", &view.apply)] {
                println!("{phase}:");
                if sets.is_empty() {
                    println!("  no variable set applies");
                }
                for set in sets {
                    println!("  {}: {}", set.set, set.names.join(", "));
                }
            }
            if view.plan.len() + view.apply.len() > 1 {
                println!("(sets apply in this order; a later set wins for a name two set)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

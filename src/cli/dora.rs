//! `tidemark dora`: the delivery metrics of a window ending now (what `GET /api/v1/dora`
//! returns), read from the service's database.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{TimeDelta, Utc};

use super::{ConfigArg, Format};
use crate::store::{HistoryFilter, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this repository.
    #[arg(long)]
    pub repo: Option<String>,
    /// Only this stack (a path, or a directory for all of its environments).
    #[arg(long)]
    pub stack: Option<String>,
    /// How far back the window reaches (30d, 12h, 2w).
    #[arg(long, default_value = "30d", value_parser = parse_window)]
    pub since: TimeDelta,
    /// A revert applied within this long of a deployment marks that deployment failed.
    #[arg(long, default_value = "24h", value_parser = parse_window)]
    pub revert_window: TimeDelta,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn parse_window(text: &str) -> Result<TimeDelta, String> {
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| TimeDelta::from_std(d).ok())
        .filter(|d| *d > TimeDelta::zero() && *d <= TimeDelta::days(3650))
        .ok_or_else(|| format!("{text:?} is not a duration such as 30d, 12h or 2w"))
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = args.config.load()?;
    let filter = HistoryFilter {
        repo: args.repo.clone(),
        stack: args.stack.clone(),
    };
    let now = Utc::now();
    let dora = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        store
            .dora(&filter, now - args.since, now, args.revert_window)
            .await
    })?;
    match args.format {
        Format::Json => {
            let mut value = serde_json::to_value(&dora).context("encoding the figures")?;
            value["repo"] = serde_json::json!(args.repo);
            value["stack"] = serde_json::json!(args.stack);
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Format::Text => {
            let secs = |s: Option<f64>| s.map_or("-".to_string(), human);
            let rate = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
            let what = match (&args.repo, &args.stack) {
                (Some(r), Some(s)) => format!("{r} {s}"),
                (Some(r), None) => r.clone(),
                (None, Some(s)) => s.clone(),
                (None, None) => "all repositories".into(),
            };
            println!(
                "delivery of {what}, {} to {}",
                dora.since.format("%Y-%m-%d %H:%M"),
                dora.until.format("%Y-%m-%d %H:%M UTC")
            );
            println!(
                "  deployments          {} ({:.2} a day)",
                dora.deployments, dora.deployment_frequency_per_day
            );
            println!(
                "  change lead time     median {}, p90 {} ({} commits)",
                secs(dora.lead_time_seconds.median),
                secs(dora.lead_time_seconds.p90),
                dora.lead_time_seconds.count
            );
            println!(
                "  change fail rate     {} ({} of {} attempts)",
                rate(dora.change_fail_rate),
                dora.failures,
                dora.attempts
            );
            println!(
                "  recovery time        median {} ({} recovered, {} still failing)",
                secs(dora.recovery_time_seconds.median),
                dora.recovery_time_seconds.count,
                match dora.failing_stacks {
                    1 => "1 stack".to_string(),
                    n => format!("{n} stacks"),
                }
            );
            println!("  rework rate          {}", rate(dora.rework_rate));
            println!(
                "  drift reconcile      median {} ({} resolved; not counted as failures)",
                secs(dora.drift_reconcile_seconds.median),
                dora.drift_reconcile_seconds.count
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds as a person reads them: `42s`, `12m`, `3.5h`, `2.0d`.
fn human(seconds: f64) -> String {
    match seconds {
        s if s < 60.0 => format!("{s:.0}s"),
        s if s < 3600.0 => format!("{:.0}m", s / 60.0),
        s if s < 86_400.0 => format!("{:.1}h", s / 3600.0),
        s => format!("{:.1}d", s / 86_400.0),
    }
}

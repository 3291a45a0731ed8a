//! `tidemark policy test`: evaluate a policy directory against a plan JSON offline, or run the
//! directory's `*_test.rego` unit tests. Exit code 0 when it passes, 1 when it does not (a
//! blocked plan, soft or hard; a failing test; a policy that cannot be loaded or evaluated).
//! Each result's `policy` is the Rego package that produced it (e.g. `tidemark.destroy`): a
//! package may span files, and the package is what a query names.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{Format, print_json};
use crate::policy::{self, Blocking, Level, PolicySet, TidemarkInput, UnitReport, Verdict};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check a plan JSON against a policy directory, or run its unit tests (--unit).
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The plan JSON (`terraform show -json PLAN`) to check.
    #[arg(long, required_unless_present = "unit", conflicts_with = "unit")]
    pub plan: Option<PathBuf>,
    /// The policy directory (every `*.rego` under it); Tidemark's shipped policies when absent.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// The enforcement level to evaluate the directory at.
    #[arg(long, default_value = "hard-mandatory", value_parser = parse_level)]
    pub level: Level,
    /// A JSON file with `input.tidemark` (repo, commit, branch, stack, run_kind, ...); without
    /// it policies see a plan run of the root stack with no tags.
    #[arg(long, conflicts_with = "unit")]
    pub tidemark: Option<PathBuf>,
    /// Run the `*_test.rego` tests instead of checking a plan.
    #[arg(long)]
    pub unit: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn parse_level(text: &str) -> Result<Level, String> {
    text.parse()
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Test(args) => test(args),
    }
}

fn test(args: TestArgs) -> Result<ExitCode> {
    let loaded = match &args.policies {
        Some(dir) => PolicySet::load(dir, args.level),
        None => PolicySet::shipped(args.level),
    };
    let set = match loaded {
        Ok(set) => set,
        // A policy that does not load is a failed check, reported where a script reads it.
        Err(err) if matches!(args.format, Format::Json) => {
            let message = format!("{:#}", anyhow::Error::from(err));
            eprintln!("error: {message}");
            print_json(
                &serde_json::json!({ "passed": false, "results": [], "errors": [message] }),
            )?;
            return Ok(ExitCode::from(1));
        }
        Err(err) => return Err(err.into()),
    };
    let passed = if args.unit {
        let report = set.run_unit_tests()?;
        print_unit(&report, args.format)?;
        report.passed
    } else {
        let verdict = check_plan(&set, &args)?;
        print_verdict(&verdict, args.format)?;
        verdict.passed
    };
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check_plan(set: &PolicySet, args: &TestArgs) -> Result<Verdict> {
    let path = args.plan.as_ref().context("--plan or --unit is required")?;
    let plan = read_json(path)?;
    let tidemark = match &args.tidemark {
        Some(path) => serde_json::from_value(read_json(path)?)
            .with_context(|| format!("{} is not a valid input.tidemark", path.display()))?,
        None => TidemarkInput::new(
            "",
            "",
            "",
            policy::StackInput::new(".", ".", Vec::<String>::new()),
            policy::run_kind::PLAN,
        ),
    };
    Ok(policy::evaluate(
        std::slice::from_ref(set),
        &plan,
        &tidemark,
    ))
}

fn read_json(path: &std::path::Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The JSON is `{"passed", "results": [{"policy", "rule", "level", "message"}], "errors"}`;
/// evaluation errors (a policy that failed to load or to evaluate) are in `errors` and on
/// stderr, and make `passed` false.
fn print_verdict(verdict: &Verdict, format: Format) -> Result<()> {
    for error in &verdict.errors {
        eprintln!("error: {error}");
    }
    match format {
        Format::Json => {
            let results: Vec<_> = verdict
                .results
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "policy": r.policy,
                        "rule": r.rule,
                        "level": r.level,
                        "message": r.message,
                    })
                })
                .collect();
            print_json(&serde_json::json!({
                "passed": verdict.passed,
                "results": results,
                "errors": verdict.errors,
            }))
        }
        Format::Text => {
            for r in &verdict.results {
                let tag = match r.blocking() {
                    Blocking::None if r.rule.is_failure() => "ADVISORY",
                    Blocking::None => "WARN",
                    Blocking::Soft | Blocking::Hard => "FAIL",
                };
                println!("{tag} {} {} [{}]: {}", r.policy, r.rule, r.level, r.message);
            }
            let outcome = match verdict.blocking {
                Blocking::None => "passed",
                Blocking::Soft => "blocked (soft-mandatory: an override can let it through)",
                Blocking::Hard => "blocked",
            };
            println!("{outcome}: {} result(s)", verdict.results.len());
            Ok(())
        }
    }
}

fn print_unit(report: &UnitReport, format: Format) -> Result<()> {
    match format {
        Format::Json => print_json(report),
        Format::Text => {
            for test in &report.tests {
                match &test.failure {
                    None => println!("PASS {}: data.{}.{}", test.file, test.package, test.name),
                    Some(why) => println!(
                        "FAIL {}: data.{}.{}: {why}",
                        test.file, test.package, test.name
                    ),
                }
            }
            let failed = report.tests.iter().filter(|t| !t.passed).count();
            if report.tests.is_empty() {
                println!("no tests found (rules named test_* in *_test.rego files)");
            } else {
                println!(
                    "{} passed, {failed} failed",
                    report.tests.len().saturating_sub(failed)
                );
            }
            Ok(())
        }
    }
}

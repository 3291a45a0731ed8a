//! The comment's snapshots (`snapshots/*.md`, rewritten with `UPDATE_SNAPSHOTS=1`) and its
//! budget, on small and very large pull requests.

use std::path::Path;

use super::*;
use crate::plan::{Counts, OutputChange, ResourceChange};
use crate::policy::{Level, PolicyResult, Rule};

fn snapshot(name: &str, body: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/notify/pr_comment/snapshots")
        .join(format!("{name}.md"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, body).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        body, expected,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 rewrites it)"
    );
}

fn summary(resources: &[(&str, &[&str])]) -> PlanSummary {
    let mut counts = Counts::default();
    let resources: Vec<ResourceChange> = resources
        .iter()
        .map(|(address, actions)| {
            let has = |a: &str| actions.contains(&a);
            match (has("create"), has("delete"), has("update")) {
                (true, true, _) => counts.replace += 1,
                (true, false, _) => counts.add += 1,
                (false, true, _) => counts.destroy += 1,
                (_, _, true) => counts.change += 1,
                _ => {}
            }
            ResourceChange {
                address: address.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
            }
        })
        .collect();
    PlanSummary {
        summary: counts,
        has_changes: !resources.is_empty(),
        resources,
        outputs: vec![OutputChange {
            name: "value".into(),
            actions: vec!["update".into()],
        }],
    }
}

fn entry<'a>(stack: &'a str, status: StackStatus) -> StackEntry<'a> {
    StackEntry {
        stack,
        run_id: Some(7),
        status,
        summary: None,
        verdict: None,
        error: None,
        plan_text: None,
        apply: None,
    }
}

fn comment<'a>(stacks: Vec<StackEntry<'a>>) -> PrComment<'a> {
    PrComment {
        repo: "infra",
        number: 12,
        head_sha: "6dcb09b5b57875f334f61aebed695e2e4193db5e",
        base_url: Some("https://tidemark.example.com"),
        stacks,
        notes: Vec::new(),
    }
}

const PLAN: &str = "Terraform will perform the following actions:\n\n  # null_resource.this will be created\n  + resource \"null_resource\" \"this\" {\n      + id = (known after apply)\n    }\n\nPlan: 1 to add, 0 to change, 0 to destroy.";

fn denial() -> Verdict {
    Verdict::new(
        vec![PolicyResult {
            set: "shipped".into(),
            policy: "tidemark.destroy".into(),
            rule: Rule::Deny,
            level: Level::SoftMandatory,
            message: "null_resource.old would be destroyed".into(),
        }],
        Vec::new(),
    )
}

#[test]
fn one_stack_with_changes() {
    let plan = summary(&[("null_resource.this", &["create"])]);
    let verdict = Verdict::new(Vec::new(), Vec::new());
    let mut stack = entry("stacks/app", StackStatus::Planned { changes: true });
    stack.summary = Some(&plan);
    stack.verdict = Some(&verdict);
    stack.plan_text = Some(PLAN);
    let body = render(&comment(vec![stack]));
    assert!(body.starts_with(MARKER));
    assert!(is_tidemark_comment(&body));
    snapshot("one_stack", &body);
}

#[test]
fn failures_denials_and_destroys_come_first() {
    let destroy = summary(&[
        ("null_resource.old", &["delete"]),
        ("null_resource.new", &["delete", "create"]),
    ]);
    let verdict = denial();
    let mut denied = entry("stacks/prod/db", StackStatus::Planned { changes: true });
    denied.summary = Some(&destroy);
    denied.verdict = Some(&verdict);
    denied.plan_text = Some(
        "  - resource \"null_resource\" \"old\" {}\nPlan: 1 to add, 0 to change, 2 to destroy.",
    );
    let mut failed = entry("stacks/broken", StackStatus::Failed);
    failed.error = Some("stack stacks/broken: main.tf:3: Unsupported argument");
    let nothing = summary(&[]);
    let mut quiet = entry("stacks/quiet", StackStatus::Planned { changes: false });
    quiet.summary = Some(&nothing);
    let body = render(&PrComment {
        notes: vec!["Merged: the reviewed plan of stacks/prod/db was not applied".into()],
        ..comment(vec![
            denied,
            failed,
            quiet,
            entry("stacks/later", StackStatus::Queued),
        ])
    });
    let at = |needle: &str| {
        body.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing:\n{body}"))
    };
    assert!(at("#### Failures") < at("#### Policy denials"));
    assert!(at("#### Policy denials") < at("#### Destroys and replacements"));
    assert!(at("#### Destroys and replacements") < at("<details>"));
    snapshot("mixed", &body);
}

#[test]
fn text_from_outside_cannot_break_the_markup() {
    let plan = summary(&[("null_resource.this", &["create"])]);
    let mut stack = entry("stacks/a|b", StackStatus::Failed);
    stack.summary = Some(&plan);
    stack.error = Some("<script>alert(1)</script> | `rm -rf` **bold** @acme/admins");
    stack.plan_text = Some("```\n</details>\n<script>x</script>\n```");
    let body = render(&comment(vec![stack]));
    // Prose is escaped; the only raw tag is inside the fenced plan, where Markdown shows it
    // as text.
    assert!(body.contains("&lt;script&gt;alert(1)"), "{body}");
    assert!(!body.contains("@acme"), "a mention: {body}");
    assert_eq!(body.matches("<script>").count(), 1, "{body}");
    // The plan's own fence is inside a longer one.
    assert!(body.contains("````diff\n```\n</details>"), "{body}");
    assert!(body.contains("`stacks/a\\|b`"), "{body}");
    snapshot("hostile_text", &body);
}

fn budget_holds(body: &str) {
    assert!(body.starts_with(MARKER));
    let n = body.chars().count();
    assert!(n <= BUDGET, "{n} characters");
}

#[test]
fn a_thousand_stacks_stay_within_the_budget() {
    let names: Vec<String> = (0..1000)
        .map(|i| format!("stacks/team-{:02}/service-{i:04}", i % 40))
        .collect();
    let plans: Vec<PlanSummary> = (0..1000)
        .map(|i| {
            if i % 100 == 0 {
                summary(&[
                    ("null_resource.gone", &["delete"]),
                    ("null_resource.this", &["update"]),
                ])
            } else {
                summary(&[("null_resource.this", &["create"])])
            }
        })
        .collect();
    let text = PLAN.repeat(20);
    let stacks = names
        .iter()
        .zip(&plans)
        .map(|(name, plan)| {
            let mut s = entry(name, StackStatus::Planned { changes: true });
            s.summary = Some(plan);
            s.plan_text = Some(&text);
            s
        })
        .collect();
    let body = render(&comment(stacks));
    budget_holds(&body);
    // Every destroy is listed by address (there are ten).
    assert_eq!(
        body.matches("destroy `null_resource.gone` in").count(),
        10,
        "{body}"
    );
    assert!(
        body.contains("more stacks]("),
        "the table's tail links to Tidemark"
    );
}

#[test]
fn a_plan_of_ten_thousand_resources_stays_within_the_budget() {
    let addresses: Vec<String> = (0..10_000)
        .map(|i| format!("module.fleet.null_resource.node[{i}]"))
        .collect();
    let actions: [&[&str]; 3] = [&["create"], &["delete"], &["delete", "create"]];
    let pairs: Vec<(&str, &[&str])> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), actions[i % 3]))
        .collect();
    let plan = summary(&pairs);
    let text = "  # a resource line of the plan\n".repeat(20_000);
    let mut stack = entry("stacks/fleet", StackStatus::Planned { changes: true });
    stack.summary = Some(&plan);
    stack.plan_text = Some(&text);
    let body = render(&comment(vec![stack]));
    budget_holds(&body);
    // Destroys and replaces are listed until the budget ends, then counted.
    let section = body
        .split("#### Destroys and replacements")
        .nth(1)
        .expect("the section");
    let section = section.split("\n\n").next().expect("its lines");
    let listed =
        section.matches("\n- destroy `").count() + section.matches("\n- replace `").count();
    assert!(listed > 100, "{listed}");
    let total = pairs.iter().filter(|(_, a)| a.contains(&"delete")).count();
    assert!(
        listed == total || body.contains(&format!("… and {} more", total - listed)),
        "{listed} of {total} listed and the rest not counted"
    );
}

#[test]
fn generated_pull_requests_of_every_size_stay_within_the_budget() {
    // A small deterministic generator: the same inputs on every run.
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n.max(1)
    };
    for round in 0..40 {
        let count = if round % 10 == 0 {
            2000
        } else {
            next(300) as usize
        };
        let names: Vec<String> = (0..count)
            .map(|i| format!("stacks/{}/s{i}", next(50)))
            .collect();
        let texts: Vec<String> = (0..count)
            .map(|_| "x`|<".repeat(next(3000) as usize))
            .collect();
        let plans: Vec<PlanSummary> = (0..count)
            .map(|_| {
                let n = next(40) as usize;
                let owned: Vec<String> = (0..n).map(|j| format!("null_resource.r{j}")).collect();
                let pairs: Vec<(&str, &[&str])> = owned
                    .iter()
                    .map(|a| {
                        (
                            a.as_str(),
                            if next(4) == 0 {
                                &["delete"][..]
                            } else {
                                &["create"][..]
                            },
                        )
                    })
                    .collect();
                summary(&pairs)
            })
            .collect();
        let stacks = (0..count)
            .map(|i| {
                let status = match next(4) {
                    0 => StackStatus::Failed,
                    1 => StackStatus::Queued,
                    _ => StackStatus::Planned { changes: true },
                };
                let mut s = entry(&names[i], status);
                s.summary = Some(&plans[i]);
                s.plan_text = Some(&texts[i]);
                s.error = Some(&texts[i]);
                s
            })
            .collect();
        budget_holds(&render(&comment(stacks)));
    }
}

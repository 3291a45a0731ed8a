//! Prints how long the pull-request comment takes to render, and how long it is, for a pull
//! request touching 1,000 stacks and for one plan of 10,000 resources (GitHub's limit is
//! 65,536 characters). `cargo run --release --example pr_comment`.

use std::time::Instant;

use tidemark::notify::pr_comment::{BUDGET, PrComment, StackEntry, StackStatus, render};
use tidemark::plan::{Counts, PlanSummary, ResourceChange};

fn plan(resources: usize, every_destroy: usize) -> PlanSummary {
    let mut summary = Counts::default();
    let resources: Vec<ResourceChange> = (0..resources)
        .map(|i| {
            let destroy = every_destroy > 0 && i % every_destroy == 0;
            if destroy {
                summary.destroy += 1;
            } else {
                summary.add += 1;
            }
            ResourceChange {
                address: format!("module.fleet.null_resource.node[{i}]"),
                actions: vec![if destroy { "delete" } else { "create" }.to_string()],
            }
        })
        .collect();
    PlanSummary {
        summary,
        has_changes: true,
        resources,
        outputs: Vec::new(),
    }
}

fn measure(name: &str, stacks: &[(String, PlanSummary)], text: &str) {
    let entries: Vec<StackEntry> = stacks
        .iter()
        .enumerate()
        .map(|(i, (stack, summary))| StackEntry {
            stack,
            run_id: Some(i as i64),
            status: StackStatus::Planned { changes: true },
            summary: Some(summary),
            verdict: None,
            error: None,
            plan_text: Some(text),
            apply: None,
        })
        .collect();
    let comment = PrComment {
        repo: "infra",
        number: 1,
        head_sha: "6dcb09b5b57875f334f61aebed695e2e4193db5e",
        base_url: Some("https://tidemark.example.com"),
        stacks: entries,
        notes: Vec::new(),
    };
    let started = Instant::now();
    let rounds = 20;
    let mut chars = 0;
    for _ in 0..rounds {
        chars = render(&comment).chars().count();
    }
    let each = started.elapsed() / rounds;
    println!("{name}: {chars} of {BUDGET} characters, rendered in {each:?}");
}

fn main() {
    let text =
        "  + resource \"null_resource\" \"this\" {\n      + id = (known after apply)\n    }\n"
            .repeat(50);
    let many: Vec<(String, PlanSummary)> = (0..1000)
        .map(|i| {
            (
                format!("stacks/team-{:02}/service-{i:04}", i % 40),
                plan(3, 0),
            )
        })
        .collect();
    measure("1,000 stacks", &many, &text);
    let big = vec![("stacks/fleet".to_string(), plan(10_000, 10))];
    measure("10,000 resources", &big, &text.repeat(100));
}

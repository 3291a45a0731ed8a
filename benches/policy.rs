//! How fast the shipped policies judge a plan: evaluations per second and milliseconds per
//! evaluation, for plans of 10, 100 and 1000 resource changes. Run with
//! `cargo bench --bench policy`. The plans are synthetic but shaped like terraform 1.0.3's
//! `show -json` (the shape the integration tests check against real terraform).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidemark::policy::{Level, PolicySet, StackInput, TidemarkInput, evaluate, run_kind};

/// A plan with `n` managed resource changes: a quarter each created, deleted, replaced and
/// unchanged, half of them inside a module.
fn plan(n: usize) -> Value {
    let actions = [
        json!(["create"]),
        json!(["delete"]),
        json!(["delete", "create"]),
        json!(["no-op"]),
    ];
    let changes: Vec<Value> = (0..n)
        .map(|i| {
            let module = (i % 2 == 1).then(|| format!("module.m{}", i % 7));
            let address = match &module {
                Some(m) => format!("{m}.null_resource.r{i}"),
                None => format!("null_resource.r{i}"),
            };
            let mut change = json!({
                "address": address,
                "mode": "managed",
                "type": "null_resource",
                "name": format!("r{i}"),
                "provider_name": "registry.terraform.io/hashicorp/null",
                "change": {
                    "actions": actions[i % 4],
                    "before": {"id": format!("{i}"), "triggers": {"v": "1"}},
                    "after": {"triggers": {"v": "2"}},
                    "after_unknown": {"id": true},
                    "before_sensitive": {},
                    "after_sensitive": {}
                }
            });
            if let Some(m) = module {
                change["module_address"] = json!(m);
            }
            change
        })
        .collect();
    json!({
        "format_version": "0.2",
        "terraform_version": "1.0.3",
        "resource_changes": changes,
        "configuration": {"root_module": {}}
    })
}

fn main() {
    // The bench cannot continue without its policies; a panic names why.
    let set = PolicySet::shipped(Level::HardMandatory).expect("shipped policies load");
    let sets = [set];
    let tidemark = TidemarkInput::new(
        "infra",
        "0123456789abcdef",
        "main",
        StackInput::new("stacks/app", "app", ["prod"]),
        run_kind::PLAN,
    )
    .config("max_deletions", 10_000);
    for n in [10, 100, 1000] {
        let plan = plan(n);
        let first = evaluate(&sets, &plan, &tidemark);
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        let budget = Duration::from_secs(3);
        let start = Instant::now();
        let mut runs = 0u32;
        while start.elapsed() < budget {
            std::hint::black_box(evaluate(&sets, std::hint::black_box(&plan), &tidemark));
            runs += 1;
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "{n:>5} resource changes: {runs:>6} evaluations in {elapsed:.2} s = {:>8.1} eval/s, {:.3} ms/eval ({} results)",
            f64::from(runs) / elapsed,
            elapsed * 1000.0 / f64::from(runs),
            first.results.len()
        );
    }
}

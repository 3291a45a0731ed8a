//! What the sandbox costs: the median wall time of a bare `terraform plan` against the same
//! plan step through the runner (prlimit, bubblewrap, streamed and redacted output), on one
//! null-provider stack; then the whole pipeline (`runner::plan`: export, init, version, plan,
//! show -json, redaction, artifact) against the same four commands run bare; then `init` with
//! and without the shared provider cache.
//!
//! Run: `cargo bench --bench runner` (BENCH_ITERS sets the iterations, default 10;
//! TIDEMARK_TOOLS_DIR reuses an installed toolchain). Bare and sandboxed runs alternate so
//! that a busy machine slows both alike.

#[path = "../tests/it/support.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidemark::crypto::PlanKey;
use tidemark::runner::{
    self, PlanRequest, RunStatus, RunnerDef, RunnerSet, RunnerSource, SandboxMode, StepKind,
    Workspace,
};
use tokio_util::sync::CancellationToken;

use support::{GitFixture, Toolchain, null_stack};

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let tools = Toolchain::get();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let def = terraform_def(tools);
    let fixture = GitFixture::new();
    fixture.write("stack/main.tf", &null_stack("bench"));
    let commit = fixture.commit("bench stack");
    let root = tempfile::tempdir().expect("workspaces root");
    let repo = tidemark::repo::open(&fixture.work()).expect("open repo");
    let oid = git2::Oid::from_str(&commit).expect("oid");
    let request = || PlanRequest {
        instance: Default::default(),
        provider_cache: None,
        lifeline: None,
        workspace: Workspace::export(root.path(), &repo, oid).expect("export"),
        stack: "stack".into(),
        runner: def.clone(),
        sandbox: SandboxMode::Bubblewrap,
        variables: vec![(
            "TF_CLI_CONFIG_FILE".into(),
            tools.cli_config().display().to_string(),
        )],
        secrets: Vec::new(),
        files: Vec::new(),
        repo: "bench".into(),
        commit: commit.clone(),
        key: PlanKey::generate(),
        state: None,
    };
    let run_step = |req: &PlanRequest, kind: StepKind| {
        let outcome = rt.block_on(runner::run_step(
            req,
            kind,
            discard_logs(&rt),
            CancellationToken::new(),
        ));
        assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    };

    // 1. One plan step, bare against sandboxed, in the same initialised workspace.
    let req = request();
    let dir = req.workspace.tree().join("stack");
    let plan_file = req.workspace.out().join("plan.tfplan");
    run_step(&req, StepKind::Init);
    let plan_args = [
        "plan",
        "-input=false",
        "-no-color",
        "-detailed-exitcode",
        &format!("-out={}", plan_file.display()),
    ];
    let bare_plan = || terraform(tools, &dir, &plan_args, &[0, 2]);
    let sandboxed_plan = || timed(|| run_step(&req, StepKind::Plan));
    bare_plan();
    sandboxed_plan();
    let (bare, sandboxed) = alternate(iters, bare_plan, sandboxed_plan);
    report("plan step", &bare, &sandboxed);

    // 1b. The same prlimit + bubblewrap command line started by std::process: what the sandbox
    // itself costs, without the runner's streaming, redaction and bookkeeping.
    let spec = runner::SandboxSpec {
        workspace: req.workspace.path().to_path_buf(),
        cwd: dir.clone(),
        program: tools.terraform(),
        args: plan_args.iter().map(|a| a.to_string()).collect(),
        ro_binds: vec![
            tools.terraform(),
            tools.cli_config(),
            tools.prefix.join("providers"),
        ],
        ro_binds_try: Vec::new(),
        // As the shipped runner does: the system view with the host's accounts file standing
        // in for the generated one.
        system: runner::system_view(Path::new("/etc/passwd"), Path::new("/etc/group")),
        network: false,
        limits: def.sandbox.limits.clone(),
    };
    let prlimit = runner::find_on_path("prlimit").expect("prlimit");
    let bwrap = runner::find_on_path("bwrap").expect("bwrap");
    let argv = runner::command_line(&prlimit, Some(&bwrap), &spec);
    let home = req.workspace.home();
    let bwrap_plan = || {
        let started = Instant::now();
        let status = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&dir)
            .env_clear()
            .envs(tools.env())
            .env("HOME", &home)
            .output()
            .expect("run bwrap")
            .status;
        assert!(
            matches!(status.code(), Some(0 | 2)),
            "sandboxed plan: {status}"
        );
        started.elapsed()
    };
    bwrap_plan();
    let (bare, sandboxed) = alternate(iters, bare_plan, bwrap_plan);
    report("plan step, sandbox command alone", &bare, &sandboxed);
    drop(req);

    // 2. The whole pipeline, each run in a fresh workspace.
    let bare_pipeline = || {
        let ws = Workspace::export(root.path(), &repo, oid).expect("export");
        let dir = ws.tree().join("stack");
        let plan_file = ws.out().join("plan.tfplan");
        let out = format!("-out={}", plan_file.display());
        let file = plan_file.display().to_string();
        let steps: [(&[&str], &[i32]); 4] = [
            (&["init", "-input=false", "-no-color"], &[0]),
            (&["version", "-json"], &[0]),
            (
                &[
                    "plan",
                    "-input=false",
                    "-no-color",
                    "-detailed-exitcode",
                    &out,
                ],
                &[0, 2],
            ),
            (&["show", "-json", "-no-color", &file], &[0]),
        ];
        steps
            .iter()
            .map(|(args, ok)| terraform(tools, &dir, args, ok))
            .sum::<Duration>()
    };
    let runner_pipeline = || {
        let req = request();
        timed(|| {
            let outcome = rt.block_on(runner::plan(
                req,
                discard_logs(&rt),
                CancellationToken::new(),
            ));
            assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
        })
    };
    let (bare, sandboxed) = alternate(iters.div_ceil(2), bare_pipeline, runner_pipeline);
    report("whole plan (init, version, plan, show)", &bare, &sandboxed);

    // 3. `init` in a fresh workspace through the runner, without and with the shared provider
    // cache (filled once by a first plan): the provider is copied out of the mirror, or
    // linked from the cache.
    let cache = tempfile::tempdir().expect("provider cache");
    let cached = || PlanRequest {
        provider_cache: Some(cache.path().to_path_buf()),
        lifeline: None,
        ..request()
    };
    let outcome = rt.block_on(runner::plan(
        cached(),
        discard_logs(&rt),
        CancellationToken::new(),
    ));
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    let init_without = || {
        let req = request();
        timed(|| run_step(&req, StepKind::Init))
    };
    let init_with = || {
        let req = cached();
        timed(|| run_step(&req, StepKind::Init))
    };
    let (without, with) = alternate(iters, init_without, init_with);
    let ms = |d: Vec<Duration>| median(d).as_secs_f64() * 1000.0;
    let written = |req: &PlanRequest| {
        run_step(req, StepKind::Init);
        du(&req.workspace.tree().join("stack/.terraform"))
    };
    let (plain, linked) = (written(&request()), written(&cached()));
    println!(
        "init, fresh workspace, {iters} runs each: median without the provider cache {:.1} ms \
         ({:.1} MiB written), with it {:.1} ms ({:.1} MiB written)",
        ms(without),
        plain as f64 / 1048576.0,
        ms(with),
        linked as f64 / 1048576.0,
    );
}

/// Bytes of the regular files below `dir` (links are not followed).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            total += du(&entry.path());
        } else if kind.is_file() {
            total += entry.metadata().map_or(0, |m| m.len());
        }
    }
    total
}

/// The shipped terraform definition pointed at the toolchain's binary.
fn terraform_def(tools: &Toolchain) -> RunnerDef {
    let text = format!(
        "runner \"terraform\" {{\n  binary = \"{}\"\n}}\n",
        tools.terraform().display()
    );
    let set = RunnerSet::load(&[RunnerSource::new("bench.hcl", text)]).expect("definitions");
    set.get("terraform").expect("terraform").clone()
}

/// Runs terraform bare (same environment as the runner gives it) and returns its wall time.
fn terraform(tools: &Toolchain, dir: &Path, args: &[&str], ok: &[i32]) -> Duration {
    let started = Instant::now();
    let status = Command::new(tools.terraform())
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(tools.env())
        .env("HOME", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run terraform")
        .status;
    let elapsed = started.elapsed();
    assert!(
        status.code().is_some_and(|c| ok.contains(&c)),
        "terraform {args:?}: {status}"
    );
    elapsed
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// A log receiver that drops every line, as a store that keeps nothing would.
fn discard_logs(rt: &tokio::runtime::Runtime) -> tokio::sync::mpsc::Sender<runner::LogLine> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    rt.spawn(async move { while rx.recv().await.is_some() {} });
    tx
}

fn alternate(
    iters: usize,
    a: impl Fn() -> Duration,
    b: impl Fn() -> Duration,
) -> (Vec<Duration>, Vec<Duration>) {
    (0..iters).map(|_| (a(), b())).unzip()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    }
}

fn report(what: &str, bare: &[Duration], sandboxed: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (b, s) = (ms(median(bare.to_vec())), ms(median(sandboxed.to_vec())));
    // Runs alternate, so each pair saw about the same machine load: the median of the paired
    // differences is the estimate least disturbed by other work on a busy machine.
    let mut diffs: Vec<f64> = bare
        .iter()
        .zip(sandboxed)
        .map(|(b, s)| ms(*s) - ms(*b))
        .collect();
    diffs.sort_by(f64::total_cmp);
    let paired = match diffs.len() {
        0 => 0.0,
        n if n % 2 == 1 => diffs[n / 2],
        n => (diffs[n / 2 - 1] + diffs[n / 2]) / 2.0,
    };
    println!(
        "{what}: {} runs each: median bare {b:.1} ms, through the runner {s:.1} ms, \
         overhead {:+.1} ms (median of paired differences {paired:+.1} ms)",
        bare.len(),
        s - b,
    );
}

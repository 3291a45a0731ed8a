//! Benchmark of `affected` on synthetic monorepos (not a timed test: it prints figures).
//!
//! `cargo bench --bench affected` generates repositories of 1,000 and 10,000 stacks (sizes can
//! be set with `TIDEMARK_BENCH_SIZES=1000,10000`), then measures each case in a child process
//! so peak memory (VmHWM) is the case's own: cold `affected` (no index), warm `affected` on the
//! same commits (snapshot cached), warm `affected` on a new head (index from the previous poll:
//! only changed subtrees are read and parsed), `git diff` alone, and a second process on the
//! index on disk (`Index::persistent`), as a second CLI call is: the same commits, and a new
//! head.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use git2::{Oid, Repository};
use tidemark::stacks::{Index, affected, synth};

const REPEATS: usize = 5;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        return child(&args[i + 1], Path::new(&args[i + 2]), &args[i + 3..]);
    }
    let sizes: Vec<usize> = std::env::var("TIDEMARK_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".to_string())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .context("TIDEMARK_BENCH_SIZES")?;
    // Wall times mean little on a shared machine: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:>7} {:>7} {:>6} | {:>9} {:>9} {:>8} | {:>9} {:>9} | {:>8} | {:>9} {:>9} {:>8}",
        "stacks",
        "files",
        "MB",
        "cold cpu",
        "cold wall",
        "cold hwm",
        "warm same",
        "warm next",
        "git diff",
        "disk same",
        "disk next",
        "disk hwm"
    );
    let mut rows = Vec::new();
    for n in sizes {
        let scratch = tempfile::tempdir()?;
        let (repo_dir, synth) = repository(scratch.path(), n)?;
        let c = &synth.commits;
        let cold = run(&repo_dir, "cold", c)?;
        let same = run(&repo_dir, "warm-same", c)?;
        let next = run(&repo_dir, "warm-next", c)?;
        let diff = run(&repo_dir, "diff", c)?;
        run(&repo_dir, "disk-write", c)?;
        let disk_same = run(&repo_dir, "disk-same", c)?;
        let disk_next = run(&repo_dir, "disk-next", c)?;
        let disk_load = run(&repo_dir, "disk-load", c)?;
        let size = std::fs::metadata(disk_index(&repo_dir))?.len();
        rows.push(format!(
            "{n:>7} stacks: index file {:.1} MB, loading it {:.1} ms",
            size as f64 / 1e6,
            disk_load.wall * 1e3
        ));
        rows.push(format!("{n:>7} stacks: warm next CPU {:.3}s", next.cpu));
        println!(
            "{:>7} {:>7} {:>6.1} | {:>8.3}s {:>8.1}ms {:>6}MB | {:>7.2}ms {:>7.1}ms | {:>6.2}ms | {:>7.1}ms {:>7.1}ms {:>6}MB",
            n,
            synth.files,
            synth.bytes as f64 / 1e6,
            cold.cpu,
            cold.wall * 1e3,
            cold.hwm_kb / 1024,
            same.wall * 1e3,
            next.wall * 1e3,
            diff.wall * 1e3,
            disk_same.wall * 1e3,
            disk_next.wall * 1e3,
            disk_same.hwm_kb.max(disk_next.hwm_kb) / 1024,
        );
    }
    println!(
        "cold: affected(commit 0, commit 1) with no index, CPU-seconds of all threads and wall;\n\
         warm same: the same call again with the index kept (snapshots cached);\n\
         warm next: index from affected(0, 1), then affected(1, 2), a head never seen (a poll);\n\
         git diff: the tree-to-tree diff alone;\n\
         disk same/next: a new process loads the index affected(0, 1) saved, then runs\n\
         affected(0, 1) or affected(1, 2) (a second CLI call; no process start).\n\
         Medians of {REPEATS}; hwm is the process's VmHWM."
    );
    for row in rows {
        println!("{row} (CPU time has 10 ms resolution)");
    }
    Ok(())
}

/// Generates the repository, or reuses the one kept under `TIDEMARK_BENCH_DIR` (handy for
/// profiling a single case: `affected-<hash> --case cold DIR/synth-10000 C0 C1 C2`).
fn repository(scratch: &Path, n: usize) -> Result<(PathBuf, synth::SynthRepo)> {
    let Some(keep) = std::env::var_os("TIDEMARK_BENCH_DIR") else {
        let dir = scratch.join("repo");
        let synth = synth::generate(&dir, n)?;
        return Ok((dir, synth));
    };
    let dir = PathBuf::from(keep).join(format!("synth-{n}"));
    let saved = dir.join(".git/bench-commits");
    if let Ok(text) = std::fs::read_to_string(&saved) {
        let mut words = text.split_whitespace();
        let files = words.next().context("saved files")?.parse()?;
        let bytes = words.next().context("saved bytes")?.parse()?;
        let commits = words.map(str::to_string).collect();
        return Ok((
            dir,
            synth::SynthRepo {
                commits,
                files,
                bytes,
            },
        ));
    }
    let synth = synth::generate(&dir, n)?;
    let text = format!(
        "{} {} {}",
        synth.files,
        synth.bytes,
        synth.commits.join(" ")
    );
    std::fs::write(saved, text)?;
    Ok((dir, synth))
}

struct Figures {
    wall: f64,
    cpu: f64,
    hwm_kb: u64,
}

/// Runs one case in a child process and reads back its figures.
fn run(repo: &Path, case: &str, commits: &[String]) -> Result<Figures> {
    let output = Command::new(std::env::current_exe()?)
        .arg("--case")
        .arg(case)
        .arg(repo)
        .args(commits)
        .output()?;
    if !output.status.success() {
        bail!(
            "case {case} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout)?;
    let mut parts = text.split_whitespace().map(str::parse::<f64>);
    let mut next = || -> Result<f64> { Ok(parts.next().context("short output")??) };
    Ok(Figures {
        wall: next()?,
        cpu: next()?,
        hwm_kb: next()? as u64,
    })
}

fn child(case: &str, repo_dir: &Path, commits: &[String]) -> Result<()> {
    let repo = Repository::open(repo_dir)?;
    let c: Vec<Oid> = commits
        .iter()
        .map(|s| Oid::from_str(s))
        .collect::<Result<_, _>>()?;
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..REPEATS {
        let (wall, cpu) = match case {
            "cold" => measure(|| {
                let result = affected(&repo, Some(c[0]), c[1], None)?;
                assert!(!result.stacks.is_empty());
                Ok(())
            })?,
            "warm-same" => {
                let mut index = Index::new();
                affected(&repo, Some(c[0]), c[1], Some(&mut index))?;
                measure(|| {
                    affected(&repo, Some(c[0]), c[1], Some(&mut index))?;
                    Ok(())
                })?
            }
            "warm-next" => {
                let mut index = Index::new();
                affected(&repo, Some(c[0]), c[1], Some(&mut index))?;
                measure(|| {
                    let result = affected(&repo, Some(c[1]), c[2], Some(&mut index))?;
                    assert_eq!(result.stacks.len(), 1);
                    Ok(())
                })?
            }
            "profile-next" => {
                // Not a figure: spends its time on the warm path, for `perf record`.
                let mut index = Index::new();
                affected(&repo, Some(c[0]), c[1], Some(&mut index))?;
                measure(|| {
                    for _ in 0..50 {
                        index.forget_snapshots();
                        affected(&repo, Some(c[1]), c[2], Some(&mut index))?;
                    }
                    Ok(())
                })?
            }
            "disk-write" => {
                let path = disk_index(repo_dir);
                let _ = std::fs::remove_file(&path);
                let mut index = Index::persistent(path);
                let m = measure(|| {
                    affected(&repo, Some(c[0]), c[1], Some(&mut index))?;
                    Ok(())
                })?;
                index.save()?;
                m
            }
            "disk-load" => measure(|| {
                let index = Index::persistent(disk_index(repo_dir));
                assert!(index.path().is_some());
                Ok(())
            })?,
            "disk-same" | "disk-next" => {
                let (base, head) = if case == "disk-same" {
                    (c[0], c[1])
                } else {
                    (c[1], c[2])
                };
                measure(|| {
                    let mut index = Index::persistent(disk_index(repo_dir));
                    affected(&repo, Some(base), head, Some(&mut index))?;
                    Ok(())
                })?
            }
            "diff" => {
                let old = tidemark::repo::commit_tree(&repo, c[0])?;
                let new = tidemark::repo::commit_tree(&repo, c[1])?;
                measure(|| {
                    tidemark::repo::changed_paths(&repo, old, new)?;
                    Ok(())
                })?
            }
            other => bail!("unknown case {other}"),
        };
        walls.push(wall);
        cpus.push(cpu);
    }
    println!("{} {} {}", median(walls), median(cpus), hwm_kb()?);
    Ok(())
}

/// Where the disk cases keep their index.
fn disk_index(repo: &Path) -> PathBuf {
    repo.join(".git").join("bench-index.idx")
}

fn measure(f: impl FnOnce() -> Result<()>) -> Result<(f64, f64)> {
    let cpu0 = cpu_seconds()?;
    let t0 = Instant::now();
    f()?;
    Ok((t0.elapsed().as_secs_f64(), cpu_seconds()? - cpu0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// User plus system CPU time of the whole process (all threads), from /proc/self/stat.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn hwm_kb() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmHWM format")?
        .parse()?)
}

//! A generator of synthetic monorepos for the `affected` benchmark: N stacks in groups of 100,
//! shared local modules that nest, local `terraform_remote_state` edges, `depends_on` by name and
//! by path, four files per stack, and a short commit history. Written with the `git` command so
//! the result is an ordinary packed repository, like a real clone.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The commits of a generated repository, oldest first.
#[derive(Debug, Clone)]
pub struct SynthRepo {
    /// 0: everything; 1: a shared module and a few stacks change, a stack is added;
    /// 2: one stack's variables change.
    pub commits: Vec<String>,
    pub files: usize,
    pub bytes: usize,
}

const GROUP: usize = 100;

fn modules_for(stacks: usize) -> usize {
    (stacks / 50).max(4)
}

/// Writes the repository into `dir` (which must be empty or missing).
pub fn generate(dir: &Path, stacks: usize) -> Result<SynthRepo> {
    std::fs::create_dir_all(dir)?;
    git(dir, &["init", "-q", "-b", "main"])?;
    let mut files = 0;
    let mut bytes = 0;
    let mut write = |path: &str, content: String| -> Result<()> {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        files += 1;
        bytes += content.len();
        std::fs::write(&full, content).with_context(|| format!("writing {path}"))
    };
    let modules = modules_for(stacks);
    write("modules/common/main.tf", module_main(None))?;
    write("modules/common/variables.tf", variables("common"))?;
    for m in 0..modules {
        let base = format!("modules/mod-{m:03}");
        write(&format!("{base}/main.tf"), module_main(Some("../common")))?;
        write(
            &format!("{base}/variables.tf"),
            variables(&format!("mod{m}")),
        )?;
        write(
            &format!("{base}/outputs.tf"),
            outputs("null_resource.this.id"),
        )?;
    }
    write("README.md", "# synthetic monorepo\n".to_string())?;
    for i in 0..stacks {
        let base = stack_dir(i);
        write(&format!("{base}/stack.hcl"), stack_hcl(i))?;
        write(&format!("{base}/main.tf"), stack_main(i, modules))?;
        write(&format!("{base}/variables.tf"), variables(&format!("s{i}")))?;
        write(&format!("{base}/outputs.tf"), outputs("module.app.id"))?;
    }
    let mut commits = vec![commit(dir, "initial")?];

    // A shared module changes (every stack using it is affected, and their downstreams), a few
    // stacks change, a stack is added, and documentation changes (which affects nothing).
    let touched = format!("modules/mod-{:03}/main.tf", 3 % modules);
    let mut main = std::fs::read_to_string(dir.join(&touched))?;
    main.push_str("# tuned\n");
    std::fs::write(dir.join(&touched), main)?;
    for i in [7usize, GROUP.min(stacks - 1), stacks - 1] {
        let path = dir.join(stack_dir(i)).join("variables.tf");
        let mut text = std::fs::read_to_string(&path)?;
        text.push_str("variable \"extra\" {\n  default = 1\n}\n");
        std::fs::write(path, text)?;
    }
    let added = format!("groups/g{:03}/new", stacks / GROUP);
    std::fs::create_dir_all(dir.join(&added))?;
    std::fs::write(dir.join(&added).join("stack.hcl"), "stack {}\n")?;
    std::fs::write(dir.join(&added).join("main.tf"), stack_main(0, modules))?;
    std::fs::write(dir.join("README.md"), "# synthetic monorepo, edited\n")?;
    commits.push(commit(dir, "tune a module")?);

    let path = dir.join(stack_dir(stacks / 3)).join("variables.tf");
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str("# note\n");
    std::fs::write(path, text)?;
    commits.push(commit(dir, "touch one stack")?);

    git(dir, &["gc", "-q"])?;
    Ok(SynthRepo {
        commits,
        files,
        bytes,
    })
}

fn stack_dir(i: usize) -> String {
    format!("groups/g{:03}/s{i:05}", i / GROUP)
}

fn stack_hcl(i: usize) -> String {
    let leader = i - i % GROUP;
    let depends = if i % 10 == 5 {
        format!("  depends_on = [\"s{leader:05}\"]\n")
    } else if i % 10 == 7 && i % GROUP > 10 {
        format!("  depends_on = [\"../s{:05}\"]\n", i - 1)
    } else {
        String::new()
    };
    format!(
        "stack {{\n  name = \"s{i:05}\"\n{depends}  tags = [\"group-{}\"]\n}}\n",
        i / GROUP
    )
}

fn stack_main(i: usize, modules: usize) -> String {
    let leader = i - i % GROUP;
    let remote = if i % 5 == 2 && i != leader {
        format!(
            "\ndata \"terraform_remote_state\" \"leader\" {{\n  backend = \"local\"\n  config = {{\n    path = \"../s{leader:05}/terraform.tfstate\"\n  }}\n}}\n"
        )
    } else {
        String::new()
    };
    format!(
        "terraform {{\n  backend \"local\" {{}}\n}}\n\nlocals {{\n  labels = merge(var.labels, {{ stack = \"s{i:05}\", team = \"platform\" }})\n}}\n\nmodule \"app\" {{\n  source = \"../../../modules/mod-{:03}\"\n  name   = var.name\n  size   = var.size\n}}\n{remote}",
        (i * 7) % modules
    )
}

fn module_main(nested: Option<&str>) -> String {
    let nested = nested
        .map(|s| format!("module \"common\" {{\n  source = \"{s}\"\n  name   = var.name\n}}\n\n"))
        .unwrap_or_default();
    format!(
        "{nested}resource \"null_resource\" \"this\" {{\n  triggers = {{\n    name = var.name\n  }}\n}}\n"
    )
}

fn variables(prefix: &str) -> String {
    format!(
        "variable \"name\" {{\n  description = \"Name of the {prefix} resources\"\n  type        = string\n  default     = \"{prefix}\"\n}}\n\nvariable \"size\" {{\n  description = \"How many\"\n  type        = number\n  default     = 3\n}}\n\nvariable \"labels\" {{\n  type    = map(string)\n  default = {{}}\n}}\n"
    )
}

fn outputs(value: &str) -> String {
    format!(
        "output \"id\" {{\n  description = \"The identifier\"\n  value       = {value}\n}}\n\noutput \"name\" {{\n  value = var.name\n}}\n"
    )
}

fn commit(dir: &Path, message: &str) -> Result<String> {
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", message])?;
    git(dir, &["rev-parse", "HEAD"])
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .current_dir(dir)
        // No background auto-gc racing the explicit `git gc` at the end.
        .args(["-c", "gc.auto=0"])
        .args(args)
        .env("GIT_AUTHOR_NAME", "Synth")
        .env("GIT_AUTHOR_EMAIL", "synth@example.test")
        .env("GIT_COMMITTER_NAME", "Synth")
        .env("GIT_COMMITTER_EMAIL", "synth@example.test")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !output.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::{ReasonKind, affected};

    /// The generator's history means what the benchmark says it means.
    #[test]
    fn generated_history_affects_module_users_and_downstreams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let synth = generate(dir.path(), 300).expect("generate");
        let repo = git2::Repository::open(dir.path()).expect("open");
        let oid = |i: usize| git2::Oid::from_str(&synth.commits[i]).expect("oid");
        let result = affected(&repo, Some(oid(0)), oid(1), None).expect("affected");
        assert!(result.errors.is_empty(), "{:?}", result.errors);
        let kinds = |path: &str| -> Vec<ReasonKind> {
            let stack = result.stacks.iter().find(|s| s.path == path).expect(path);
            stack.reasons.iter().map(|r| r.kind).collect()
        };
        // 300 stacks, 6 modules: module 3 is used by stacks with i*7 % 6 == 3.
        assert_eq!(kinds("groups/g000/s00003"), [ReasonKind::Module]);
        assert_eq!(kinds("groups/g000/s00007"), [ReasonKind::File]);
        assert_eq!(kinds("groups/g003/new"), [ReasonKind::Added]);
        let direct = result.stacks.iter().filter(|s| s.direct).count();
        assert_eq!(direct, 50 + 3 + 1);
        // Stack 100 leads group 1: ten depend on it by name, twenty read its state; seven of
        // those thirty use module 3 and so are direct already.
        let indirect = result.stacks.iter().filter(|s| !s.direct).count();
        assert_eq!(indirect, 23);
        let leader = result
            .stacks
            .iter()
            .position(|s| s.path == "groups/g001/s00100");
        let reader = result
            .stacks
            .iter()
            .position(|s| s.path == "groups/g001/s00102");
        assert!(leader < reader && reader.is_some());
        assert!(!result.stacks.iter().any(|s| s.path == "groups/g000/s00001"));
    }
}

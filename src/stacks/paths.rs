//! Repository paths: `/`-separated, relative to the root, no trailing slash, `"."` for the root
//! itself. Joining and normalising here is purely lexical and refuses to climb above the root,
//! which is how nothing outside the repository is ever named, let alone read.

/// The root directory's name in stack paths.
pub const ROOT: &str = ".";

/// A path that climbs above the repository root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escape;

/// Joins `rel` onto the directory `dir` and normalises `.` and `..`. A `rel` starting with `/`
/// is taken from the repository root. Returns `"."` for the root.
pub fn join(dir: &str, rel: &str) -> Result<String, Escape> {
    let mut parts: Vec<&str> = Vec::new();
    let rel = if let Some(rooted) = rel.strip_prefix('/') {
        rooted
    } else {
        if dir != ROOT {
            parts.extend(dir.split('/').filter(|p| !p.is_empty()));
        }
        rel
    };
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Escape);
                }
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        Ok(ROOT.to_string())
    } else {
        Ok(parts.join("/"))
    }
}

/// The directory a file lives in (`"."` at the root).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..i],
        None => ROOT,
    }
}

/// The last component of a path.
pub fn file_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `dir/name`, or `name` when `dir` is the root.
pub fn child(dir: &str, name: &str) -> String {
    if dir == ROOT {
        return name.to_string();
    }
    let mut path = String::with_capacity(dir.len() + 1 + name.len());
    path.push_str(dir);
    path.push('/');
    path.push_str(name);
    path
}

/// The directory and each of its ancestors, ending with the root `"."`.
pub fn ancestors(dir: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(dir);
    std::iter::from_fn(move || {
        let current = next?;
        next = if current == ROOT {
            None
        } else {
            Some(parent(current))
        };
        Some(current)
    })
}

/// Markdown files are documentation: never part of what a stack is made of.
pub fn is_markdown(path: &str) -> bool {
    let name = file_name(path).as_bytes();
    name.len() >= 3 && name[name.len() - 3..].eq_ignore_ascii_case(b".md")
}

/// Terraform and OpenTofu configuration files.
pub fn is_terraform(path: &str) -> bool {
    path.ends_with(".tf") || path.ends_with(".tofu")
}

/// What a file directly in a module's directory is to Terraform (issue 14, item 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleFile {
    /// Configuration (`*.tf`, `*.tf.json`, `*.tofu`, `*.tofu.json`): read wherever the module
    /// is used.
    Config,
    /// Read only when the directory is the root module, as a Terragrunt unit's `source` is:
    /// the variable files Terraform loads by itself and the dependency lock file (Terragrunt
    /// copies the source's when the unit has none). Ignored for a module a `module` block calls.
    Root,
}

/// How a file in a module's directory counts, if it does.
pub fn module_file(name: &str) -> Option<ModuleFile> {
    let config = [".tf", ".tofu", ".tf.json", ".tofu.json"];
    let root = [".auto.tfvars", ".auto.tfvars.json"];
    if config.iter().any(|s| name.ends_with(s)) {
        Some(ModuleFile::Config)
    } else if matches!(
        name,
        "terraform.tfvars" | "terraform.tfvars.json" | ".terraform.lock.hcl"
    ) || root.iter().any(|s| name.ends_with(s))
    {
        Some(ModuleFile::Root)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_normalises_and_refuses_escapes() {
        assert_eq!(join("a/b", "../c"), Ok("a/c".to_string()));
        assert_eq!(join("a/b", "./c//d/"), Ok("a/b/c/d".to_string()));
        assert_eq!(join("a/b", "/x/y"), Ok("x/y".to_string()));
        assert_eq!(join("a", ".."), Ok(".".to_string()));
        assert_eq!(join(".", "x"), Ok("x".to_string()));
        assert_eq!(join("a", "../.."), Err(Escape));
        assert_eq!(join("a", "/../x"), Err(Escape));
    }

    #[test]
    fn ancestors_end_at_the_root() {
        assert_eq!(
            ancestors("a/b/c").collect::<Vec<_>>(),
            ["a/b/c", "a/b", "a", "."]
        );
        assert_eq!(ancestors(".").collect::<Vec<_>>(), ["."]);
        assert_eq!(parent("a"), ".");
        assert!(is_markdown("docs/README.MD"));
        assert!(!is_markdown("md"));
    }
}

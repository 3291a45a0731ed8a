//! The `atlantis.yaml` side of resolving a commit: its projects as stacks, and the projects on
//! one directory with different workspaces as that stack's environments (`dir@workspace`).

use anyhow::Result;

use super::super::atlantis::{self, Project};
use super::super::environment::{EnvironmentConfig, valid_name};
use super::super::hash::Map;
use super::super::hcl::StackConfig;
use super::super::paths;
use super::super::{StackError, StackKind};
use super::{Builder, NO_CONFIG};

/// The workspace a project plans in (`default` when it names none).
pub(super) fn workspace(project: &Project) -> &str {
    project.workspace.as_deref().unwrap_or("default")
}

/// Whether a directory's projects are environments: more than one project, or one that plans
/// a workspace other than `default`.
pub(super) fn has_environments(projects: &[Project]) -> bool {
    projects.len() > 1 || projects.iter().any(|p| workspace(p) != "default")
}

/// The `StackConfig` a directory's `atlantis.yaml` projects stand for: the first project's
/// name, every project's `depends_on` (by project name) and `when_modified` (as watch globs
/// relative to the directory), and an environment per workspace when there are several.
pub(super) fn project_config(projects: &[Project]) -> StackConfig {
    let first = &projects[0];
    let mut config = StackConfig {
        name: first.name.clone(),
        ..NO_CONFIG.clone()
    };
    for project in projects {
        let line = project.line;
        config
            .depends_on
            .extend(project.depends_on.iter().map(|name| (name.clone(), line)));
        config.watch.extend(
            project
                .when_modified
                .iter()
                .flat_map(|p| atlantis::watch_patterns(p))
                .map(|p| (p, line)),
        );
    }
    config.depends_on.dedup();
    config.watch.sort();
    config.watch.dedup_by(|a, b| a.0 == b.0);
    if has_environments(projects) {
        config.environments = projects
            .iter()
            .map(|p| EnvironmentConfig {
                name: workspace(p).to_string(),
                line: p.line,
                workspace: p.workspace.clone(),
                ..EnvironmentConfig::default()
            })
            .collect();
    }
    config
}

/// Project name -> (stack index, the environment it is when its directory has several).
pub(super) fn project_names(
    found: &[(String, StackKind)],
    projects: &Map<String, Vec<Project>>,
) -> Map<String, (usize, Option<String>)> {
    let mut names = Map::default();
    for (i, (dir, _)) in found.iter().enumerate() {
        let Some(group) = projects.get(dir) else {
            continue;
        };
        let envs = has_environments(group);
        for project in group {
            if let Some(name) = &project.name {
                let env = envs.then(|| workspace(project).to_string());
                names.entry(name.clone()).or_insert((i, env));
            }
        }
    }
    names
}

impl Builder<'_> {
    /// The projects of a root `atlantis.yaml` as stacks (a directory with `terragrunt.hcl` is a
    /// Terragrunt stack), its problems as errors; nothing without the file.
    pub(super) fn atlantis_projects(&mut self) -> Result<Vec<(String, StackKind)>> {
        let Some((file, blob)) = atlantis::FILE_NAMES
            .iter()
            .find_map(|name| self.files.blob(name).map(|id| (name.to_string(), id)))
        else {
            return Ok(Vec::new());
        };
        let bytes = crate::repo::read_blob(self.repo, blob)?;
        let config = atlantis::parse(&bytes);
        for p in &config.problems {
            self.errors
                .push(StackError::at(paths::ROOT, &file, p.line, &p.message));
        }
        let mut found = Vec::new();
        let mut projects: Map<String, Vec<Project>> = Map::default();
        for project in config.projects {
            let line = Some(project.line);
            if !self.files.has_dir(&project.dir) {
                let message = format!("project directory {} not found", project.dir);
                self.errors
                    .push(StackError::at(&project.dir, &file, line, &message));
                continue;
            }
            if !valid_name(workspace(&project)) {
                let message = format!(
                    "project workspace {:?} cannot name an environment (letters, digits, '-', \
                     '_', '.'): ignored",
                    workspace(&project)
                );
                self.errors
                    .push(StackError::at(&project.dir, &file, line, &message));
                continue;
            }
            if let Some(group) = projects.get_mut(&project.dir) {
                // Atlantis plans a directory once per workspace: each is an environment.
                if group.iter().any(|p| workspace(p) == workspace(&project)) {
                    let message = format!(
                        "project directory {} is also an earlier project's in workspace {:?}: \
                         ignored",
                        project.dir,
                        workspace(&project)
                    );
                    self.errors
                        .push(StackError::at(&project.dir, &file, line, &message));
                } else {
                    group.push(project);
                }
                continue;
            }
            let terragrunt = self
                .files
                .exists(&paths::child(&project.dir, "terragrunt.hcl"));
            let kind = if terragrunt {
                StackKind::Terragrunt
            } else {
                StackKind::Terraform
            };
            found.push((project.dir.clone(), kind));
            projects.insert(project.dir.clone(), vec![project]);
        }
        self.atlantis = Some((file, projects));
        Ok(found)
    }
}

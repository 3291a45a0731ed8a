//! Terragrunt units: includes found with `find_in_parent_folders`, `read_terragrunt_config`,
//! dependencies, and paths that escape the repository.

use super::*;

const ROOT_HCL: &str = "remote_state {\n  backend = \"s3\"\n}\n";

#[test]
fn terragrunt_include_with_named_parent_and_dependency() {
    check(
        &[
            ("root.hcl", ROOT_HCL),
            ("live/env.hcl", "locals { env = \"prod\" }\n"),
            (
                "live/vpc/terragrunt.hcl",
                "include \"root\" {\n  path = find_in_parent_folders(\"root.hcl\")\n}\nterraform {\n  source = \"../../modules//vpc\"\n}\n",
            ),
            (
                "live/app/terragrunt.hcl",
                "include {\n  path = find_in_parent_folders(\"root.hcl\")\n}\nlocals {\n  env = read_terragrunt_config(find_in_parent_folders(\"env.hcl\"))\n}\ndependency \"vpc\" {\n  config_path = \"../vpc\"\n}\n",
            ),
            (
                "live/solo/terragrunt.hcl",
                "terraform {\n  source = \"git::https://example.test/m.git//x?ref=v1\"\n}\n",
            ),
            ("modules/vpc/main.tf", ""),
        ],
        &[
            Write("root.hcl", "# c\n"),
            Write("modules/vpc/main.tf", "# c\n"),
        ],
        "live/vpc: module modules/vpc/main.tf via modules/vpc, include root.hcl
         live/app: include root.hcl, dependency live/vpc",
    );
}

#[test]
fn terragrunt_find_in_parent_folders_without_argument_and_read_config() {
    check(
        &[
            ("live/terragrunt.hcl", ROOT_HCL),
            ("live/common.hcl", "locals {}\n"),
            (
                "live/a/terragrunt.hcl",
                "include {\n  path = find_in_parent_folders()\n}\nlocals {\n  c = read_terragrunt_config(\"${get_terragrunt_dir()}/../common.hcl\")\n}\n",
            ),
            (
                "live/b/terragrunt.hcl",
                "dependencies {\n  paths = [\"../a\"]\n}\n",
            ),
        ],
        &[Write("live/common.hcl", "locals { x = 1 }\n")],
        // live/terragrunt.hcl is live/a's parent configuration, not a unit (issue 14, item 7).
        "live/a: include live/common.hcl
         live/b (indirect): dependency live/a",
    );
}

#[test]
fn terragrunt_include_escaping_the_repository_is_an_error() {
    check(
        &[(
            "a/terragrunt.hcl",
            "include {\n  path = \"../../root.hcl\"\n}\n",
        )],
        &[Write("a/extra.hcl", "")],
        "a: file a/extra.hcl
         ! a a/terragrunt.hcl:2 include: path \"../../root.hcl\" escapes the repository",
    );
}

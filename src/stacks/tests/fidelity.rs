//! Detection on layouts taken from real repositories (issue 14): heredocs holding lines that
//! start with their marker, self-calling modules, symlinks, Terragrunt expressions and parents.

use super::*;

#[test]
fn heredoc_line_starting_with_its_marker_is_content() {
    let main = "resource \"null_resource\" \"x\" {\n  provisioner \"local-exec\" {\n    command = <<EOF\necho \"\nEOF\" >> /tmp/out\nEOF\n  }\n}\n\nmodule \"m\" {\n  source = \"../modules/m\"\n}\n";
    check(
        &[("app/main.tf", main), ("modules/m/main.tf", "")],
        &[Write("modules/m/main.tf", "# c\n")],
        "app: module modules/m/main.tf via modules/m",
    );
}

#[test]
fn indented_heredoc_forms_end_only_at_their_marker_line() {
    let main = "locals {\n  a = <<-EOT\n    EOT2 is not the end\n    EOT-ish\n    EOT\" >> ${path.module}/out\n    EOT\n  b = <<EOT\nEOTX\nEOT\n}\n\nmodule \"m\" {\n  source = \"../modules/m\"\n}\n";
    check(
        &[("app/main.tf", main), ("modules/m/main.tf", "")],
        &[Write("modules/m/main.tf", "# c\n")],
        "app: module modules/m/main.tf via modules/m",
    );
}

#[test]
fn module_calling_itself_stays_a_stack_with_an_error() {
    let main = "resource \"null_resource\" \"x\" {}\n\nmodule \"again\" {\n  source = \"./\"\n}\n";
    check(
        &[("app/main.tf", main)],
        &[Write("app/extra.tf", "# c\n")],
        "app: file app/extra.tf
         ! app app/main.tf:4 module source is the module's own directory (it calls itself)",
    );
    check(
        &[
            ("a/stack.hcl", STACK),
            ("a/main.tf", "module \"me\" {\n  source = \"../a\"\n}\n"),
        ],
        &[Write(
            "a/main.tf",
            "module \"me\" {\n  source = \"../a/\"\n}\n",
        )],
        "a: file a/main.tf
         ! a a/main.tf:2 module source is the module's own directory (it calls itself)",
    );
}

#[test]
fn symlinked_tf_file_inside_the_tree_is_its_target() {
    let shared =
        "variable \"region\" {}\n\nmodule \"net\" {\n  source = \"../../modules/net\"\n}\n";
    check_linked(
        &[
            ("shared/variables-common.tf", shared),
            ("deploy/a/main.tf", ""),
            ("deploy/b/main.tf", ""),
            ("modules/net/main.tf", ""),
            ("deploy/c/main.tf", ""),
        ],
        &[
            ("deploy/a/variables-common.tf", "../../shared/variables-common.tf"),
            ("deploy/b/variables-common.tf", "../../shared/variables-common.tf"),
            ("deploy/c/outside.tf", "../../../elsewhere/x.tf"),
        ],
        &[Write("shared/variables-common.tf", &format!("{shared}# c\n"))],
        "deploy/a: file shared/variables-common.tf
         deploy/b: file shared/variables-common.tf
         ! deploy/c deploy/c/outside.tf symbolic link to ../../../elsewhere/x.tf leaves the repository",
    );
}

#[test]
fn symlinked_module_directory_is_traced_to_its_target() {
    check_linked(
        &[
            ("app/stack.hcl", STACK),
            (
                "app/main.tf",
                "module \"m\" {\n  source = \"../vendor/m\"\n}\n",
            ),
            ("modules/m/main.tf", ""),
            ("other/stack.hcl", STACK),
            (
                "other/main.tf",
                "module \"o\" {\n  source = \"./gone\"\n}\n",
            ),
        ],
        &[("vendor/m", "../modules/m"), ("other/gone", "/etc")],
        &[Write("modules/m/main.tf", "# c\n")],
        "app: module modules/m/main.tf via vendor/m
         ! other other/gone symbolic link to /etc leaves the repository
         ! other other/main.tf:2 module source other/gone: no such directory",
    );
}

const CONDITIONAL_SOURCE: &str = "locals {\n  local = true\n}\n\nterraform {\n  source = local.local ? \"../../modules//app\" : \"git::https://example.test/m.git//app?ref=v1\"\n}\n";
const TEMPLATED_SOURCE: &str = "terraform {\n  source = \"${get_env(\"LOCAL\", \"\") != \"\" ? \"../../modules//db\" : \"git::https://example.test/m.git//db?ref=v1\"}\"\n}\n";

#[test]
fn terragrunt_conditional_source_yields_every_local_literal() {
    check(
        &[
            ("live/app/terragrunt.hcl", CONDITIONAL_SOURCE),
            ("live/db/terragrunt.hcl", TEMPLATED_SOURCE),
            ("modules/app/main.tf", ""),
            ("modules/db/main.tf", ""),
        ],
        &[
            Write("modules/app/main.tf", "# c\n"),
            Write("modules/db/main.tf", "# c\n"),
        ],
        "live/app: module modules/app/main.tf via modules/app
         live/db: module modules/db/main.tf via modules/db",
    );
}

#[test]
fn terragrunt_source_that_cannot_be_evaluated_is_an_unresolved_input() {
    let mut t = TestRepo::new();
    t.write(
        "live/app/terragrunt.hcl",
        "terraform {\n  source = var.local ? local.path : \"../../modules//app\"\n}\n",
    );
    t.write("live/db/terragrunt.hcl", CONDITIONAL_SOURCE);
    t.write("modules/app/main.tf", "");
    let head = t.commit();
    let found = discover(&t.repo, head, None).expect("discover");
    assert_eq!(
        found.stacks[0].unresolved_inputs,
        [UnresolvedInput {
            file: "live/app/terragrunt.hcl".into(),
            line: 2,
            expression: "source = var.local ? local.path : \"../../modules//app\"".into(),
        }]
    );
    assert_eq!(found.stacks[1].unresolved_inputs, []);
    let json = serde_json::to_value(&found.stacks[0]).expect("json");
    assert_eq!(json["unresolved_inputs"][0]["line"], 2);
    // The literal branch is still a source.
    check(
        &[
            (
                "live/app/terragrunt.hcl",
                "terraform {\n  source = var.local ? local.path : \"../../modules//app\"\n}\n",
            ),
            ("modules/app/main.tf", ""),
        ],
        &[Write("modules/app/main.tf", "# c\n")],
        "live/app: module modules/app/main.tf via modules/app",
    );
}

#[test]
fn parent_terragrunt_config_without_terraform_block_is_not_a_unit() {
    let files = [
        (
            "live/terragrunt.hcl",
            "remote_state {\n  backend = \"s3\"\n}\n",
        ),
        ("live/LICENSE", "MIT"),
        (
            "live/app/terragrunt.hcl",
            "include \"root\" {\n  path = find_in_parent_folders()\n}\n\nterraform {\n  source = \"../../modules//app\"\n}\n",
        ),
        ("modules/app/main.tf", ""),
        // Included too, but a unit: it has a terraform block of its own.
        (
            "live/net/terragrunt.hcl",
            "terraform {\n  source = \"../../modules//app\"\n}\n",
        ),
        (
            "live/net/sub/terragrunt.hcl",
            "include \"net\" {\n  path = find_in_parent_folders()\n}\n",
        ),
    ];
    check(&files, &[Write("live/LICENSE", "Apache-2.0")], "");
    check(
        &files,
        &[Write(
            "live/terragrunt.hcl",
            "remote_state {\n  backend = \"gcs\"\n}\n",
        )],
        "live/app: include live/terragrunt.hcl",
    );
    check(
        &files,
        &[Write("live/net/x.hcl", "")],
        "live/net: file live/net/x.hcl",
    );
}

#[test]
fn paths_in_an_included_terragrunt_file_are_the_including_units() {
    let envcommon = "locals {\n  env = read_terragrunt_config(\"../env.hcl\")\n}\n\ndependency \"vpc\" {\n  config_path = \"../vpc\"\n}\n\nterraform {\n  source = \"${get_parent_terragrunt_dir()}/../../modules//app\"\n}\n";
    let unit = "include \"envcommon\" {\n  path = \"${dirname(find_in_parent_folders(\"root.hcl\"))}/_envcommon/app.hcl\"\n}\n";
    let files = [
        ("live/root.hcl", "remote_state {\n  backend = \"s3\"\n}\n"),
        ("live/_envcommon/app.hcl", envcommon),
        ("live/prod/env.hcl", "locals {}\n"),
        ("live/prod/app/terragrunt.hcl", unit),
        (
            "live/prod/vpc/terragrunt.hcl",
            "terraform {\n  source = \"../../../modules//vpc\"\n}\n",
        ),
        ("modules/app/main.tf", ""),
        ("modules/vpc/main.tf", ""),
    ];
    check(
        &files,
        &[Write("modules/vpc/main.tf", "# c\n")],
        "live/prod/vpc: module modules/vpc/main.tf via modules/vpc
         live/prod/app (indirect): dependency live/prod/vpc",
    );
    check(
        &files,
        &[
            Write("live/prod/env.hcl", "locals { x = 1 }\n"),
            Write("modules/app/main.tf", "# c\n"),
        ],
        "live/prod/app: module modules/app/main.tf via modules/app, include live/prod/env.hcl",
    );
}

#[test]
fn a_file_read_by_read_terragrunt_config_keeps_its_own_directory() {
    check(
        &[
            (
                "live/prod/app/terragrunt.hcl",
                "locals {\n  env = read_terragrunt_config(\"../env.hcl\")\n}\n",
            ),
            (
                "live/prod/env.hcl",
                "locals {\n  region = read_terragrunt_config(\"./region.hcl\")\n}\n",
            ),
            ("live/prod/region.hcl", "locals {}\n"),
        ],
        &[Write("live/prod/region.hcl", "locals { r = 1 }\n")],
        "live/prod/app: include live/prod/region.hcl",
    );
}

#[test]
fn terragrunt_stack_hcl_units_are_reported_and_their_templates_are_not_stacks() {
    let stack = "unit \"app\" {\n  source = \"../../units/app\"\n  path   = \"app\"\n}\n\nunit \"db\" {\n  source = \"git::https://example.test/catalog.git//units/db?ref=v1\"\n  path   = \"db\"\n}\n\nunit \"net\" {\n  source = \"../../units/app\"\n  path   = \"net\"\n}\n";
    let template =
        "include \"root\" {\n  path = find_in_parent_folders(\"root.hcl\")\n}\n\ninputs = values\n";
    let files = [
        ("live/root.hcl", "remote_state {\n  backend = \"s3\"\n}\n"),
        ("live/prod/terragrunt.stack.hcl", stack),
        ("units/app/terragrunt.hcl", template),
        // Generated by `terragrunt stack generate` and committed: a unit like any other.
        ("live/prod/.terragrunt-stack/net/terragrunt.hcl", template),
    ];
    let errors = "! live/prod live/prod/terragrunt.stack.hcl terragrunt.stack.hcl is not supported yet; its units are not stacks: unit \"app\", unit \"db\"
         ! live/prod live/prod/terragrunt.stack.hcl:1 unit \"app\": units/app is its template, not a stack";
    check(
        &files,
        &[Write(
            "units/app/terragrunt.hcl",
            &format!("{template}# c\n"),
        )],
        errors,
    );
    check(
        &files,
        &[Write(
            "live/root.hcl",
            "remote_state {\n  backend = \"gcs\"\n}\n",
        )],
        &format!("live/prod/.terragrunt-stack/net: include live/root.hcl\n{errors}"),
    );
    let mut t = TestRepo::new();
    for (path, content) in files {
        t.write(path, content);
    }
    let head = t.commit();
    let found = discover(&t.repo, head, None).expect("discover");
    let paths: Vec<&str> = found.stacks.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["live/prod/.terragrunt-stack/net"]);
}

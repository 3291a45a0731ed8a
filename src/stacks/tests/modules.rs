//! What a module is made of (issue 14, item 6): its Terraform files, the modules it calls and
//! the files its expressions name; not its README images, CI files or uncalled sub-modules. A
//! stack's own directory keeps every file, except nested stacks and modules it does not call.

use super::*;

const CALL_NET: &str = "module \"net\" {\n  source = \"../modules/net\"\n}\n";

#[test]
fn a_module_is_its_terraform_files_not_its_images_ci_or_uncalled_sub_modules() {
    let files = [
        ("app/stack.hcl", STACK),
        ("app/main.tf", CALL_NET),
        ("modules/net/main.tf", ""),
        ("modules/net/versions.tf.json", "{}"),
        ("modules/net/README.md", "# net"),
        ("modules/net/docs/diagram.png", "png"),
        ("modules/net/.github/workflows/ci.yml", "on: push"),
        ("modules/net/.gitignore", ".terraform/"),
        ("modules/net/.terraform.lock.hcl", "# lock"),
        ("modules/net/modules/unused/main.tf", ""),
    ];
    check(
        &files,
        &[
            Write("modules/net/docs/diagram.png", "png2"),
            Write("modules/net/.github/workflows/ci.yml", "on: pull_request"),
            Write("modules/net/.gitignore", "*.tfstate"),
            // Terraform reads only the root module's lock file.
            Write("modules/net/.terraform.lock.hcl", "# lock 2"),
            Write("modules/net/modules/unused/main.tf", "# c\n"),
        ],
        "",
    );
    check(
        &files,
        &[
            Write("modules/net/main.tf", "# c\n"),
            Write("modules/net/versions.tf.json", "{\"terraform\": {}}"),
        ],
        "app: module modules/net/main.tf via modules/net, \
              module modules/net/versions.tf.json via modules/net",
    );
}

#[test]
fn an_uncalled_sub_module_of_the_root_module_affects_only_itself() {
    // The layout from the issue: the repository's root is the module its examples call.
    let example = "module \"this\" {\n  source = \"../..\"\n}\n";
    let files = [
        ("main.tf", "resource \"null_resource\" \"x\" {}\n"),
        ("variables.tf", ""),
        ("examples/a/main.tf", example),
        ("examples/b/main.tf", example),
        ("modules/sub/main.tf", ""),
        (".github/workflows/ci.yml", "on: push"),
        ("docs/diagram.png", "png"),
    ];
    check(
        &files,
        &[
            Write("modules/sub/main.tf", "# c\n"),
            Write(".github/workflows/ci.yml", "on: pull_request"),
            Write("docs/diagram.png", "png2"),
        ],
        "modules/sub: file modules/sub/main.tf",
    );
    check(
        &files,
        &[Write("variables.tf", "variable \"x\" {}\n")],
        "examples/a: module variables.tf via .
         examples/b: module variables.tf via .",
    );
}

#[test]
fn a_stack_directory_keeps_its_files_but_not_modules_it_does_not_call() {
    let main = "module \"used\" {\n  source = \"./modules/used\"\n}\n";
    let files = [
        ("app/stack.hcl", STACK),
        ("app/main.tf", main),
        ("app/modules/used/main.tf", ""),
        ("app/modules/unused/main.tf", ""),
        ("app/modules/unused/files/x.json", "{}"),
        ("app/files/x.json", "{}"),
    ];
    check(
        &files,
        &[
            Write("app/modules/unused/main.tf", "# c\n"),
            Write("app/modules/unused/files/x.json", "{\"a\": 1}"),
            Write("app/files/x.json", "{\"a\": 1}"),
            // The conservative rule inside the stack's own directory: a called module's
            // other files count there.
            Write("app/modules/used/logo.png", "png"),
        ],
        "app: file app/files/x.json, file app/modules/used/logo.png",
    );
}

#[test]
fn a_terragrunt_source_is_its_units_root_module() {
    // Terraform loads a root module's tfvars and lock file, not a called module's.
    let files = [
        (
            "live/app/terragrunt.hcl",
            "terraform {\n  source = \"../../modules//app\"\n}\n",
        ),
        ("tf/stack.hcl", STACK),
        (
            "tf/main.tf",
            "module \"app\" {\n  source = \"../modules/app\"\n}\n",
        ),
        ("modules/app/main.tf", ""),
        ("modules/app/terraform.tfvars", "a = 1\n"),
        ("modules/app/logo.png", "png"),
    ];
    check(
        &files,
        &[
            Write("modules/app/terraform.tfvars", "a = 2\n"),
            Write("modules/app/logo.png", "png2"),
        ],
        "live/app: module modules/app/terraform.tfvars via modules/app",
    );
    check(
        &files,
        &[Write("modules/app/main.tf", "# c\n")],
        "live/app: module modules/app/main.tf via modules/app
         tf: module modules/app/main.tf via modules/app",
    );
}

# How Tidemark runs Terragrunt. Terragrunt calls terraform itself: `helpers` binds the terraform
# binary read-only and puts it on PATH inside the sandbox. The plan file is written by the
# terraform that terragrunt runs in the stack directory, so `{plan_file}` (an absolute path)
# works unchanged.
runner "terragrunt" {
  binary  = "terragrunt"
  helpers = ["terraform"]

  env_allow = [
    "TF_CLI_CONFIG_FILE",
    "TF_LOG",
    "TERRAGRUNT_LOG_LEVEL",
    "SSL_CERT_FILE",
    "HTTPS_PROXY",
    "NO_PROXY",
  ]
  env = {
    CHECKPOINT_DISABLE         = "1"
    TF_IN_AUTOMATION           = "1"
    TF_INPUT                   = "0"
    TERRAGRUNT_NON_INTERACTIVE = "true"
  }
  cli_config_env = "TF_CLI_CONFIG_FILE"

  step "init" {
    args = ["init", "-input=false", "-no-color"]
  }
  step "version" {
    args    = ["version", "-json"]
    timeout = "60s"
  }
  step "plan" {
    args       = ["plan", "-input=false", "-no-color", "-detailed-exitcode", "-out={plan_file}"]
    exit_codes = { "0" = "ok", "2" = "changes" }
  }
  step "show" {
    args = ["show", "-json", "-no-color", "{plan_file}"]
  }
  step "apply" {
    args = ["apply", "-input=false", "-no-color", "-auto-approve", "{plan_file}"]
  }
  step "state_pull" {
    args = ["state", "pull"]
  }

  sandbox {
    # A read-only view of the host's system: /usr (and the merged-/usr links /bin, /lib, ...),
    # certificates, /etc/alternatives and a generated /etc/passwd naming only the run's user,
    # so local-exec, the external data source and providers that call aws, kubectl or jq work.
    # The rest of /etc, home directories and Tidemark's data dir stay invisible.
    system            = true
    network           = false
    address_space_mib = 4096
    cpu_seconds       = 1800
    file_size_mib     = 4096
    open_files        = 4096
    output_cap_kib    = 2048
    timeout           = "30m"
  }
}

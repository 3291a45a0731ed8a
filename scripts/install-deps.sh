#!/usr/bin/env bash
# Installs the system packages Tidemark's runner needs when they are missing: bubblewrap (the
# sandbox) and util-linux's prlimit (resource limits). Debian/Ubuntu only; idempotent. CI and
# the quickstart call it; it needs root (or sudo) only when something is missing.
set -euo pipefail

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v prlimit >/dev/null 2>&1 || missing+=(util-linux)
command -v git >/dev/null 2>&1 || missing+=(git)

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: bubblewrap and prlimit already installed" >&2
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${missing[*]} and no apt-get: install them with your package manager" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
bwrap --version >&2

#!/usr/bin/env bash
# Fuzzes every target of fuzz/ for SECONDS each (default 30) on the stable toolchain: installs
# cargo-fuzz (pinned) when missing, builds with `cargo fuzz build -s none` (no sanitizer works on
# stable) into a target directory of its own, runs each target on a temporary copy of its corpus
# (so the checkout stays clean), and prints execs, execs/s, seconds and corpus size per target.
# Exits 1 when any target crashes, after all have run; the crashing inputs are kept under
# $TIDEMARK_FUZZ_TARGET_DIR/artifacts/NAME/ and printed in base64 (fix, then add the input to
# fuzz/regressions/NAME/, which tests/it/fuzz_corpus.rs replays).
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${1:-30}
shift || true

cargo_fuzz_version=0.13.2
target_dir="${TIDEMARK_FUZZ_TARGET_DIR:-$HOME/.cache/tidemark/fuzz-target}"
tools="${TIDEMARK_TOOLS_DIR:-${CARGO_TARGET_DIR:-$root/target}/tools}"
fuzz_root="$tools/cargo-fuzz-$cargo_fuzz_version"
export PATH="$fuzz_root/bin:$PATH"

if ! cargo fuzz --version 2>/dev/null | grep -q " $cargo_fuzz_version\$"; then
  echo "fuzz.sh: installing cargo-fuzz $cargo_fuzz_version into $fuzz_root" >&2
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --root "$fuzz_root" >&2
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

echo "== cargo fuzz build -s none (${targets[*]})"
(cd fuzz && cargo fuzz build -s none --target-dir "$target_dir") >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts="$target_dir/artifacts"
failed=()
printf '%-9s %12s %9s %8s %7s\n' target execs execs/s seconds corpus
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  mkdir -p "$corpus" "$artifacts/$target"
  if [ -d "fuzz/corpus/$target" ]; then
    cp -r "fuzz/corpus/$target/." "$corpus/"
  fi
  # Regressions are replayed as seeds too: a fix that comes undone shows at once.
  seeds=()
  if [ -d "fuzz/regressions/$target" ]; then
    seeds+=("$root/fuzz/regressions/$target")
  fi
  log="$work/$target.log"
  start=$(date +%s%N)
  status=0
  (cd fuzz && cargo fuzz run -s none --target-dir "$target_dir" "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$target/") >"$log" 2>&1 || status=$?
  end=$(date +%s%N)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  size=$(find "$corpus" -type f | wc -l)
  printf '%-9s %12s %9s %8.1f %7s\n' "$target" "${execs:-?}" "${rate:-?}" \
    "$(awk -v ns=$((end - start)) 'BEGIN { print ns / 1e9 }')" "$size"
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "fuzz.sh: $target failed (exit $status); the end of its log:" >&2
    tail -n 40 "$log" >&2
    for crash in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
      echo "fuzz.sh: $target input $crash (base64):" >&2
      head -c 4096 "$crash" | base64 -w 0 >&2
      echo >&2
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, no crash"

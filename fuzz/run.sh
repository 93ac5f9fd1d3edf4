#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: `bash fuzz/run.sh [SECONDS] [TARGET...]`
# (default: HARK_FUZZ_SECONDS or 20 s each, all targets). Needs cargo-fuzz (`cargo install
# cargo-fuzz --locked`). Each target starts from its committed corpus (fuzz/corpus/TARGET,
# read only) plus inputs generated from ../shared/conformance when present; what it finds
# goes to a scratch corpus, and a crash stops the run with the input in
# fuzz/artifacts/TARGET/. The summary gives executions, coverage and crashes per target.
#
# Stable Rust: cargo-fuzz passes no -Z flag with `--sanitizer none` (Rust code is
# memory-safe; the C in aws-lc is the only unsafe code reached and is fuzzed upstream),
# so no nightly toolchain or RUSTC_BOOTSTRAP is needed.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-${HARK_FUZZ_SECONDS:-20}}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
fi
target_dir=${CARGO_TARGET_DIR:-$PWD/target}/fuzz
flags=(--sanitizer none --release --target-dir "$target_dir")

start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz build: $(( $(date +%s) - start )) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
conformance=../../shared/conformance
if [ -d "$conformance" ]; then
  python3 seeds/conformance.py "$conformance" "$scratch/seeds"
else
  echo "fuzz: no ../shared/conformance; starting from the committed corpus only"
fi

summary=$scratch/summary
printf '%-18s %12s %10s %8s %8s %8s\n' target executions exec/s cov ft crashes > "$summary"
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/work/$t"
  [ -d "$scratch/seeds/$t" ] && cp "$scratch/seeds/$t"/* "$scratch/work/$t"/ 2>/dev/null || true
  log=$scratch/$t.log
  status=0
  cargo fuzz run "${flags[@]}" "$t" "$scratch/work/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -print_final_stats=1 > "$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  crashes=0
  if [ "$status" -ne 0 ]; then
    crashes=1
    failed=1
    echo "== fuzz target $t FAILED (exit $status):"
    grep -vE '^#[0-9]+' "$log" | tail -40
  fi
  printf '%-18s %12s %10s %8s %8s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$crashes" >> "$summary"
done
echo "== fuzz summary (${seconds}s per target, $(( $(date +%s) - start )) s in all, build included)"
cat "$summary"
exit "$failed"

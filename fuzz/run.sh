#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with libFuzzer, when a nightly toolchain
# and cargo-fuzz are there; otherwise says so and exits 0 (the stable test
# `cargo test -p realtime --test fuzz_corpus` checks the same properties on any toolchain).
#
#   fuzz/run.sh [SECONDS]            every target
#   TARGETS="parsers http" fuzz/run.sh 20
#   FUZZ_SANITIZER=none fuzz/run.sh 15   # no ASan: a quicker build (CI); panics are still found
#
# New inputs go to a scratch corpus (fuzz/target/corpus/<target>), never into the checked-in
# seeds (fuzz/corpus/<target>). A crash leaves its input in fuzz/artifacts/<target>/ and makes
# the script exit non-zero; replay one with `cargo +nightly fuzz run <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
targets=${TARGETS:-parsers ws_frame sse_query http ws_session}
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain here: libFuzzer run skipped (the stable fuzz_corpus test still runs the targets)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz --locked): libFuzzer run skipped"
  exit 0
fi

started=$(date +%s)
cargo +nightly fuzz build -s "$sanitizer"
echo "fuzz: build took $(( $(date +%s) - started )) s"

dict_of() {
  case "$1" in
    parsers) echo dict/parsers.dict ;;
    sse_query) echo dict/query.dict ;;
    *) echo dict/json.dict ;;
  esac
}

failed=()
for t in $targets; do
  scratch=target/corpus/$t
  mkdir -p "$scratch" "artifacts/$t"
  echo "fuzz: $t for ${seconds} s"
  # -rss_limit_mb: the node in the http/ws_session targets is purged every 512 inputs; this
  # bound catches a leak. -timeout: one input never takes this long.
  set +e
  cargo +nightly fuzz run -s "$sanitizer" "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$seconds" -dict="$(dict_of "$t")" -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1 >"target/fuzz-$t.log" 2>&1
  rc=$?
  set -e
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|SUMMARY|==[0-9]+== ?ERROR)' \
    "target/fuzz-$t.log" || true
  if [ "$rc" != 0 ]; then
    grep -E "panicked at|Test unit written" -A3 "target/fuzz-$t.log" | head -20 || true
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/target/fuzz-*.log)"
  exit 1
fi
echo "fuzz: every target ran ${seconds} s without a finding"

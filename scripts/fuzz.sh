#!/usr/bin/env bash
# Coverage-guided fuzzing of the index/SSTable parser and the bundle reader.
#   scripts/fuzz.sh N_SECONDS [target...]     (targets: table_fuzzer bundle_fuzzer; default both)
# N_SECONDS is the total budget, split evenly between the targets. Builds with
# fuzz/build.sh, starts from the committed seeds in fuzz/corpus/<target>/ plus
# the corpus grown by earlier runs (build/fuzz/corpus/<target>/, not committed; $FUZZ_WORK
# overrides that directory, e.g. to start from the committed seeds only),
# writes crashing inputs to build/fuzz/artifacts/ and a summary to
# build/fuzz/last-run.json. Exits non-zero if any target found a crash, leak,
# timeout or out-of-memory.
set -euo pipefail
cd "$(dirname "$0")/.."

total=${1:?usage: scripts/fuzz.sh N_SECONDS [target...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(table_fuzzer bundle_fuzzer)

OUT=$(fuzz/build.sh)
per=$(( total / ${#targets[@]} ))
[ "$per" -ge 1 ] || per=1
mkdir -p "$OUT/artifacts"
status=0
summary="["
for t in "${targets[@]}"; do
  corpus=${FUZZ_WORK:-$OUT/corpus}/$t
  mkdir -p "$corpus"
  log=$OUT/$t.log
  set +e
  # -rss_limit_mb / -malloc_limit_mb: an allocation sized by an unchecked field is a finding.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$OUT/$t" -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t-" "$corpus" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -ao '[0-9]*$' || echo 0)
  last=$(grep -aE '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | grep -ao 'cov: [0-9]*' | grep -ao '[0-9]*' || echo 0)
  ft=$(echo "$last" | grep -ao 'ft: [0-9]*' | grep -ao '[0-9]*' || echo 0)
  corp=$(ls "$corpus" | wc -l)
  echo "$t: exit $rc, ${execs} executions in ${per}s, coverage ${cov} edges / ${ft} features, corpus ${corp} inputs (log: $log)"
  if [ $rc -ne 0 ]; then
    status=1
    grep -aE 'ERROR|SUMMARY|==[0-9]+==|runtime error|Test unit written' "$log" | head -20 >&2 || true
  fi
  [ "$summary" = "[" ] || summary="$summary,"
  summary="$summary{\"target\":\"$t\",\"exit\":$rc,\"seconds\":$per,\"executions\":${execs:-0},\"cov\":${cov:-0},\"ft\":${ft:-0},\"corpus\":$corp}"
done
echo "$summary]" >"$OUT/last-run.json"
exit $status

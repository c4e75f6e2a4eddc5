#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/, a package of its own) and runs each for a bounded time.
#   scripts/fuzz.sh                 every target, 60 s each (FUZZ_SECONDS to change)
#   scripts/fuzz.sh ranges layer    some targets
# Each target starts from its committed seed corpus (Fuzz/corpus/<target>) and adds what it finds
# to a working corpus under .build-fuzz/corpus/<target>. A crash stops the run with the input
# saved as .build-fuzz/crash-<target>-*; it becomes a fixed bug and a regression test
# (Tests/FuzzRegressionTests replays Fuzz/corpus/<target>/ and Fuzz/regressions/<target>/ on every test run).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
scratch=$PWD/.build-fuzz
echo "== building the fuzz targets (-sanitize=fuzzer, -enable-testing)"
# SwiftPM keeps the build plan of a path dependency (the wharf package) across source changes and
# then misses files added since: plan afresh every time (compiled objects are still reused).
rm -f "$scratch/debug.yaml" "$scratch/build.db"
mkdir -p "$scratch"
status=0
swift build --package-path Fuzz --scratch-path "$scratch" \
  -Xswiftc -sanitize=fuzzer -Xswiftc -enable-testing -Xswiftc -parse-as-library >"$scratch/build.log" 2>&1 || status=$?
grep -vE '^\[[0-9]+/[0-9]+\]' "$scratch/build.log" || true
binary="$scratch/debug/wharf-fuzz"
# A failed build must stop here: an older binary would run without the newest targets.
[ "$status" -eq 0 ] && [ -x "$binary" ] || { echo "fuzz build failed" >&2; exit 1; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(ls Fuzz/corpus))
status=0
for target in "${targets[@]}"; do
  work="$scratch/corpus/$target"
  mkdir -p "$work"
  echo "== $target: ${seconds} s"
  # SWIFT_BACKTRACE off: libFuzzer itself must catch the trap to save the input that caused it.
  if ! SWIFT_BACKTRACE=enable=no WHARF_FUZZ_TARGET=$target "$binary" "$work" "Fuzz/corpus/$target" -max_total_time="$seconds" -max_len=65536 \
       -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$scratch/crash-$target-" 2>"$scratch/$target.log"; then
    echo "!! $target found a crash or a hang:" >&2
    tail -40 "$scratch/$target.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb" "$scratch/$target.log" | tr '\n' ' ' || true
    echo
  fi
done
exit $status

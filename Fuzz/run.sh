#!/usr/bin/env bash
# Builds the libFuzzer driver (Fuzz/Package.swift, -sanitize=fuzzer,address) and fuzzes the
# parsers of untrusted files (Sources/FuzzTargets).
#
#   Fuzz/run.sh [--seconds N] [--runs N] [--real-models] [--no-build] [target ...]
#
# Targets: gguf safetensors tokenizer-json tokenize adapter-config jsonl chat-template sd-adapter (default: all).
# Each target runs until N seconds or N executions, whichever comes first (default: 20 s).
# The growing corpus lives in .cache/fuzz/corpus/<target> (seeded from Fuzz/seeds/<target> and
# the kept regressions in Tests/Fixtures/fuzz/<target>); a crash, leak, timeout (> 10 s), single
# allocation over 1 GiB or broken invariant is written to .cache/fuzz/findings/<target>/.
# One line per target goes to .cache/fuzz/summary.tsv. Exits non-zero when anything was found.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=20 runs=-1 real=0 build=1 targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --real-models) real=1; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(gguf safetensors tokenizer-json tokenize adapter-config jsonl chat-template sd-adapter)

driver=.build-fuzz/release/lora-fuzz
if [ "$build" = 1 ]; then
    echo "Building the fuzz driver (release, -sanitize=fuzzer,address)…"
    # SwiftPM caches the build plan of a path dependency: without this, files added to the main
    # package since the last fuzz build are not seen.
    rm -f .build-fuzz/release/description.json
    (cd Fuzz && swift build -c release --build-path ../.build-fuzz \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library 2>&1 | grep -Ev '^(/usr/bin/ld.gold: warning|$)' | tail -3)
fi
[ -x "$driver" ] || { echo "no fuzz driver at $driver" >&2; exit 1; }

mkdir -p .cache/fuzz
summary=.cache/fuzz/summary.tsv
[ -f "$summary" ] || printf 'date\ttarget\texecutions\tseconds\texec_per_s\tcoverage\tfeatures\tcorpus\tfindings\n' > "$summary"
status=0
for target in "${targets[@]}"; do
    corpus=.cache/fuzz/corpus/$target findings=.cache/fuzz/findings/$target log=.cache/fuzz/$target.log
    mkdir -p "$corpus" "$findings"
    extra=()
    [ -d "Tests/Fixtures/fuzz/$target" ] && extra+=("Tests/Fixtures/fuzz/$target")
    dict=()
    [ -f "Fuzz/dictionaries/$target.dict" ] && dict=(-dict="Fuzz/dictionaries/$target.dict")
    echo "== $target: up to ${seconds}s / $runs runs (log: $log)"
    start=$(date +%s)
    set +e
    # SWIFT_BACKTRACE off: the Swift runtime's backtracer and ASan's both want the crash.
    SWIFT_BACKTRACE=enable=no LORA_FUZZ_TARGET=$target LORA_FUZZ_REAL_MODELS=$real ASAN_OPTIONS=detect_leaks=1 \
        "$driver" "$corpus" "Fuzz/seeds/$target" "${extra[@]}" "${dict[@]}" \
        -max_total_time="$seconds" -runs="$runs" -timeout=10 -malloc_limit_mb=1024 -rss_limit_mb=4096 \
        -artifact_prefix="$findings/" -print_final_stats=1 -close_fd_mask=1 > "$log" 2>&1
    rc=$?
    set -e
    elapsed=$(( $(date +%s) - start ))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo ?)
    ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || echo ?)
    size=$(ls "$corpus" | wc -l)
    found=$(ls "$findings" | wc -l)
    rate=$(( elapsed > 0 ? ${execs:-0} / elapsed : 0 ))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "${execs:-0}" "$elapsed" "$rate" "$cov" "$ft" "$size" "$found" >> "$summary"
    echo "   ${execs:-0} executions in ${elapsed}s (${rate}/s), coverage $cov, features $ft, corpus $size, findings $found"
    if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
        status=1
        echo "   FOUND SOMETHING (exit $rc): see $log and $findings/" >&2
        grep -E 'ERROR|invariant broken|Test unit written|deadly signal|SUMMARY' "$log" | head -5 >&2 || true
    fi
done
exit $status

#!/usr/bin/env bash
# swift-lora beside PyTorch + PEFT on the same model files, shapes and machine, as ratios.
#
#     Benchmarks/compare.sh [--reps N] [--quick] [--python PATH] [--output docs/PERFORMANCE.md]
#                           [--only REGEX]
#
# Every case runs `lora bench train|infer --json` and, when the reference venv exists,
# Scripts/reference/bench_peft.py with the same settings, alternately, --reps times (default 3);
# the table takes medians. Each run is its own process, so each peak RSS is its own. It also
# trains 200 steps on real text (the sentiment sentences as causal-LM data) in fp32 and in bf16
# and compares the loss curves. Results go to .build/compare/results.jsonl; `lora bench report`
# writes the ratio table, the targets, the commands and the machine into the generated block of
# docs/PERFORMANCE.md (the rest of that file is kept). Run it on an otherwise idle machine: it
# takes about half an hour with 3 repetitions. --only REGEX runs just the matching cases (loss
# curves: 'curve') and adds them to the existing results instead of starting over.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=3
STEPS=10
PYTHON=${PYTHON:-$HOME/venvs/swift-lora-ref/bin/python}
OUTPUT=docs/PERFORMANCE.md
ONLY=
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS=$2; shift 2 ;;
        --quick) REPS=1; STEPS=3; shift ;;
        --python) PYTHON=$2; shift 2 ;;
        --output) OUTPUT=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

swift build -c release --product lora
LORA=.build/release/lora
WORK=.build/compare
mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
LOG=$WORK/log.txt
if [ -z "$ONLY" ]; then : > "$RESULTS"; : > "$LOG"; fi
selected() { [ -z "$ONLY" ] || [[ $1 =~ $ONLY ]]; }

if [ -x "$PYTHON" ] && "$PYTHON" -c "import torch, peft, transformers" 2>/dev/null; then
    HAVE_PEFT=1
else
    HAVE_PEFT=0
    echo "no reference venv at $PYTHON (make fixtures installs one): swift-lora figures only" >&2
fi

# record CASE IMPL COMMAND…: runs the command, appends {"case", "impl", "command", "result"}.
record() {
    local case=$1 impl=$2
    shift 2
    selected "$case" || return 0
    echo "[$(date +%H:%M:%S)] $case / $impl: $*" | tee -a "$LOG" >&2
    local json
    if json=$("$@" 2>>"$LOG"); then
        printf '{"case":"%s","impl":"%s","command":"%s","result":%s}\n' "$case" "$impl" "$*" "$json" >> "$RESULTS"
    else
        echo "  failed (see $LOG)" >&2
    fi
}
ours() { record "$1" swift-lora "$LORA" bench "${@:2}" --json; }
peft() { [ "$HAVE_PEFT" = 1 ] && record "$1" "${PEFT_IMPL:-peft}" "$PYTHON" Scripts/reference/bench_peft.py "${@:2}" || true; }

SMOL=smollm2-135m-instruct
MINI=all-minilm-l6-v2
for rep in $(seq 1 "$REPS"); do
    echo "== repetition $rep of $REPS" >&2
    # Training, SmolLM2 batch 4 × 128 (both sides default to it), alternately.
    ours lora-qkvo train --model $SMOL --steps "$STEPS"
    peft lora-qkvo train --model $SMOL --steps "$STEPS"
    ours lora-qkvo-bf16 train --model $SMOL --steps "$STEPS" --precision bf16
    PEFT_IMPL=peft-autocast peft lora-qkvo-bf16 train --model $SMOL --steps "$STEPS" --autocast-bf16
    ours lora-all train --model $SMOL --steps "$STEPS" --targets all-linear
    peft lora-all train --model $SMOL --steps "$STEPS" --targets all-linear
    ours full train --model $SMOL --steps "$STEPS" --full
    peft full train --model $SMOL --steps "$STEPS" --full
    ours minilm train --model $MINI --batch-size 32 --seq-len 64 --steps "$STEPS"
    peft minilm train --model $MINI --batch-size 32 --seq-len 64 --steps "$STEPS"
    ours minilm-bf16 train --model $MINI --batch-size 32 --seq-len 64 --steps "$STEPS" --precision bf16
    PEFT_IMPL=peft-autocast peft minilm-bf16 train --model $MINI --batch-size 32 --seq-len 64 --steps "$STEPS" --autocast-bf16
    # Memory variants inside swift-lora.
    ours lora-qkvo-recompute train --model $SMOL --steps "$STEPS" --recompute
    ours lora-qkvo-bf16-recompute train --model $SMOL --steps "$STEPS" --precision bf16 --recompute
    ours qlora train --model $SMOL --steps "$STEPS" --precision q
    ours qlora-recompute train --model $SMOL --steps "$STEPS" --precision q --recompute
    # Inference: 128-token prompt, 64 greedy tokens.
    ours infer-base infer --model $SMOL
    peft infer-base infer --model $SMOL
    ours infer-unmerged infer --model $SMOL --random-adapter
    peft infer-unmerged infer --model $SMOL --variant unmerged
    ours infer-merged infer --model $SMOL --random-adapter --merge
    peft infer-merged infer --model $SMOL --variant merged
    ours infer-bf16 infer --model $SMOL --precision bf16
    peft infer-bf16 infer --model $SMOL --bf16
    # Base, unmerged and merged in turn in one process: the 2% and 10% targets need paired ratios.
    ours infer-paired infer --model $SMOL --random-adapter --paired --repeats 5
done

# bf16 against fp32 over 200 steps of real text: the sentiment sentences as causal-LM data.
DATA=.cache/experiment-sentiment/data/train.jsonl
[ -f "$DATA" ] || "$LORA" data prepare sentiment --output "$(dirname "$DATA")"
CURVES=()
for precision in fp32 bf16; do
    out=$WORK/curve-$precision
    if selected curve; then
        rm -rf "$out"
        echo "[$(date +%H:%M:%S)] loss curve / $precision" >&2
        "$LORA" train --model $SMOL --data "$DATA" --task causal-lm --steps 200 --batch-size 8 --lr 2e-4 \
            --precision "$precision" --seed 0 --output "$out" --json >> "$LOG" 2>&1
    fi
    [ -f "$out/metrics.jsonl" ] && CURVES+=(--curve "$precision=$out/metrics.jsonl")
done

"$LORA" bench report --results "$RESULTS" "${CURVES[@]}" --output "$OUTPUT"
echo "wrote $OUTPUT" >&2

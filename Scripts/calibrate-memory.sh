#!/bin/sh
# Compares `lora train --dry-run`'s estimated peak memory with the measured peak (VmHWM,
# peak_rss_bytes of `lora train --json`) on the real models, 3 training steps per configuration,
# on generated data whose sequences fill --max-seq-len. Prints one line per configuration:
# estimate, measured, estimate ÷ measured. Needs a release build (make release or
# swift build -c release) and the models in the store (lora models fetch all); python3 to write
# the data and read the JSON.
#
#   Scripts/calibrate-memory.sh [path/to/lora]
set -eu
LORA=${1:-.build/release/lora}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 - "$WORK" <<'PY'
import json, random, sys
random.seed(1)
words = "the quick brown fox jumps over lazy dog while seven bright stars shine above quiet river banks and distant mountains echo with song".split()
with open(sys.argv[1] + "/llm.jsonl", "w") as f:
    for i in range(64):
        f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(400))}) + "\n")
with open(sys.argv[1] + "/cls.jsonl", "w") as f:
    for i in range(64):
        f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(400)), "label": random.choice(["pos", "neg"])}) + "\n")
PY
printf '%-44s %12s %12s %7s\n' configuration "estimate MiB" "measured MiB" ratio
measure() {
    name=$1; shift
    "$LORA" train --output "$WORK/out" --steps 3 --json --dry-run "$@" > "$WORK/dry.json" 2>/dev/null
    "$LORA" train --output "$WORK/out" --steps 3 --json "$@" > "$WORK/run.json" 2>/dev/null
    rm -rf "$WORK/out"
    python3 - "$name" "$WORK/dry.json" "$WORK/run.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[2]))["estimate"]["peak_bytes"]
m = json.load(open(sys.argv[3]))["peak_rss_bytes"]
print("%-44s %12.1f %12.1f %7.3f" % (sys.argv[1], e / 2**20, m / 2**20, e / m))
PY
}
S="--model smollm2-135m-instruct --data $WORK/llm.jsonl"
M="--model all-minilm-l6-v2 --task classification --data $WORK/cls.jsonl"
measure "smollm2 fp32 4x128"             $S --batch-size 4 --max-seq-len 128
measure "smollm2 bf16 4x128"             $S --batch-size 4 --max-seq-len 128 --precision bf16
measure "smollm2 q 4x128"                $S --batch-size 4 --max-seq-len 128 --precision q
measure "smollm2 fp32 --recompute 4x128" $S --batch-size 4 --max-seq-len 128 --recompute
measure "smollm2 fp32 --recompute --valid 4x128" $S --batch-size 4 --max-seq-len 128 --recompute --valid "$WORK/llm.jsonl"
measure "smollm2 q --recompute 4x128"    $S --batch-size 4 --max-seq-len 128 --precision q --recompute
measure "smollm2 fp32 1x64"              $S --batch-size 1 --max-seq-len 64
measure "smollm2 fp32 8x256"             $S --batch-size 8 --max-seq-len 256
measure "smollm2 bf16 8x256"             $S --batch-size 8 --max-seq-len 256 --precision bf16
measure "smollm2 fp32 --recompute 8x256" $S --batch-size 8 --max-seq-len 256 --recompute
measure "smollm2 fp32 all-linear r16 4x128" $S --batch-size 4 --max-seq-len 128 --rank 16 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
measure "smollm2 --full 2x64"            $S --batch-size 2 --max-seq-len 64 --full
measure "minilm fp32 4x128"              $M --batch-size 4 --max-seq-len 128
measure "minilm fp32 16x256"             $M --batch-size 16 --max-seq-len 256
measure "minilm --full 8x128"            $M --batch-size 8 --max-seq-len 128 --full

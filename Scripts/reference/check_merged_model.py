#!/usr/bin/env python3
"""Load a model directory written by `lora merge` with transformers and compare its outputs with
PEFT's merged outputs recorded in an adapter fixture's expected.json.

    python Scripts/reference/check_merged_model.py MERGED_DIR Tests/Fixtures/adapters/smollm2-qkvod

Causal LMs: per-token log-probabilities (absolute tolerance 1e-3). Classifiers: logits
(1e-4 relative for F32 output; pass --tolerance for F16/BF16 output). Exits 1 on a mismatch.
"""

import argparse
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

torch.set_grad_enabled(False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("merged")
    ap.add_argument("fixture")
    ap.add_argument("--tolerance", type=float, default=None)
    args = ap.parse_args()
    with open(os.path.join(args.fixture, "expected.json")) as f:
        expected = json.load(f)
    if any(os.path.exists(os.path.join(args.merged, f)) for f in ("tokenizer.json", "vocab.txt")):
        AutoTokenizer.from_pretrained(args.merged)  # the tokenizer files must load too
    else:
        print("no tokenizer files in", args.merged, "(lora merge writes none for a SentencePiece GGUF): the weights are checked alone")
    worst = 0.0
    if expected.get("kind", "causal-lm") == "causal-lm":
        model = AutoModelForCausalLM.from_pretrained(args.merged, dtype=torch.float32).eval()
        for inp, ref in zip(expected["inputs"], expected["merged"]):
            ids = inp["ids"]
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            ours = [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
            worst = max(worst, max(abs(a - b) for a, b in zip(ours, ref)))
        tol = args.tolerance or 1e-3
    else:
        model = AutoModelForSequenceClassification.from_pretrained(args.merged, dtype=torch.float32).eval()
        scale = 1.0
        for inp, ref in zip(expected["inputs"], expected["merged"]):
            kw = {k: torch.tensor([inp[k]]) for k in ("attention_mask", "token_type_ids") if k in inp}
            logits = model(torch.tensor([inp["ids"]]), **kw).logits[0].tolist()
            worst = max(worst, max(abs(a - b) for a, b in zip(logits, ref)))
            scale = max(scale, max(abs(x) for x in ref))
        tol = (args.tolerance or 1e-4) * scale
    print(f"{args.merged}: transformers vs PEFT merged ({expected.get('kind', 'causal-lm')}): max difference {worst:.3e} (tolerance {tol:.1e})")
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()

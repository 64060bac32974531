"""Load an adapter written by `lora train` on Gemma 3 270M into PEFT (transformers' Gemma3ForCausalLM
from the same GGUF, fp32) and compare PEFT's log-probabilities with `lora score --adapter`'s.

    lora score --model gemma-3-270m --adapter RUN --text "..." --json > ours.json
    ~/venvs/swift-lora-ref/bin/python Scripts/reference/check_gemma3_adapter.py GGUF RUN ours.json

Prints the largest |Δ log p| and exits 1 above 1e-3 (or when PEFT adapts other modules than the
adapter's config names, or the token ids differ).
"""
import json
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

torch.set_grad_enabled(False)
path, adapter, ours_file = sys.argv[1:4]
folder, name = os.path.dirname(path), os.path.basename(path)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager").eval()
peft_model = PeftModel.from_pretrained(model, adapter).eval()
with open(ours_file) as f:
    ours = json.load(f)
ids = torch.tensor([ours["ids"]])
lp = torch.log_softmax(peft_model(ids).logits[0].double(), -1)[:-1].gather(1, ids[0, 1:, None])[:, 0].tolist()
worst = max(abs(a - b) for a, b in zip(lp, ours["logprobs"]))
adapted = sorted({n.split(".lora_A")[0] for n, _ in peft_model.named_parameters() if ".lora_A." in n})
print(f"PEFT adapted {len(adapted)} modules; log-probs of {len(lp)} tokens vs lora score --adapter: max |Δ| {worst:.3e}")
sys.exit(0 if worst <= 1e-3 and len(lp) == len(ours["logprobs"]) else 1)

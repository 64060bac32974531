"""PEFT's mixed-batch forward on a whole model (`model(input_ids, adapter_names=[...])`): the
committed tiny Llama (Tests/Fixtures/tiny-llama) with four committed PEFT adapters loaded at
once, each row of one batch using its own (issue 15, point 4: per-row adapters through the
model, for the server's mixed batches).

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_model_mixed_batch_fixture.py

Adapters (already in Tests/Fixtures/adapters): tiny-llama-combine/a, /b, /c (q_proj, v_proj;
r 4, 2, 4) and tiny-llama-all-linear (every linear module, so rows on it change the MLPs too,
which the other adapters leave alone). Writes Tests/Fixtures/mixed-batch/tiny-llama.safetensors:
input_ids [5, 9] and logits [5, 9, 256] (float32) for rows on "__base__", "a", "b", "all", "c",
plus tiny-llama.json naming each row's adapter and each adapter's directory.
"""
import json
import os

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

torch.set_default_dtype(torch.float32)
fixtures = "Tests/Fixtures"
base_dir = os.path.join(fixtures, "tiny-llama")
config = LlamaConfig.from_json_file(os.path.join(base_dir, "config.json"))
config._attn_implementation = "eager"
base = LlamaForCausalLM(config).to(torch.float32)
missing, unexpected = base.load_state_dict(load_file(os.path.join(base_dir, "model.safetensors")), strict=False)
assert not unexpected and list(missing) == ["lm_head.weight"], (missing, unexpected)
base.eval()

adapters = {"a": "adapters/tiny-llama-combine/a", "b": "adapters/tiny-llama-combine/b",
            "c": "adapters/tiny-llama-combine/c", "all": "adapters/tiny-llama-all-linear"}
model = None
for name, path in adapters.items():
    if model is None:
        model = PeftModel.from_pretrained(base, os.path.join(fixtures, path), adapter_name=name)
    else:
        model.load_adapter(os.path.join(fixtures, path), adapter_name=name)
model.eval()

rows = ["__base__", "a", "b", "all", "c"]
generator = torch.Generator().manual_seed(7)
input_ids = torch.randint(3, config.vocab_size, (len(rows), 9), generator=generator)
with torch.no_grad():
    logits = model(input_ids=input_ids, adapter_names=rows).logits.float()
    # Each row alone with its adapter gives the same logits (PEFT's own consistency).
    for i, name in enumerate(rows):
        if name == "__base__":
            with model.disable_adapter():
                alone = model(input_ids=input_ids[i:i + 1]).logits
        else:
            model.set_adapter(name)
            alone = model(input_ids=input_ids[i:i + 1]).logits
        print(name, "mixed vs alone max |diff|", (alone[0] - logits[i]).abs().max().item())
save_file({"input_ids": input_ids.contiguous(), "logits": logits.contiguous()},
          os.path.join(fixtures, "mixed-batch/tiny-llama.safetensors"))
with open(os.path.join(fixtures, "mixed-batch/tiny-llama.json"), "w") as f:
    json.dump({"rows": [None if r == "__base__" else r for r in rows], "adapters": adapters}, f, indent=2)
    f.write("\n")

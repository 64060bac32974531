"""PEFT's mixed-batch LoRA forward (`model(x, adapter_names=[...])`) on one linear layer, for
`LoRALinear.forward(_:rowAdapters:)` (issue 15, point 4: one base product for the batch, the
low-rank products per group of rows that share an adapter, rows on "__base__" getting none).

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_mixed_batch_fixture.py

Writes Tests/Fixtures/mixed-batch/: tensors.safetensors (x, the base weight and bias, each
adapter's lora_A / lora_B, the mixed-batch output and each row's output run alone) and
config.json (the adapters' r, lora_alpha, use_rslora and the row assignment).
"""
import json
import os

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

torch.manual_seed(0)
out_dir = "Tests/Fixtures/mixed-batch"
os.makedirs(out_dir, exist_ok=True)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 6, bias=True)

    def forward(self, x):
        return self.proj(x)


base = Tiny()
configs = {
    "a": dict(r=2, lora_alpha=4, use_rslora=False),
    "b": dict(r=3, lora_alpha=3, use_rslora=True),
}
model = get_peft_model(base, LoraConfig(target_modules=["proj"], lora_dropout=0.0, init_lora_weights="gaussian", **configs["a"]),
                       adapter_name="a")
model.add_adapter("b", LoraConfig(target_modules=["proj"], lora_dropout=0.0, init_lora_weights="gaussian", **configs["b"]))
layer = model.base_model.model.proj
with torch.no_grad():
    for name in configs:
        layer.lora_B[name].weight.normal_(0, 0.5)   # B starts at zero; make the adapters matter
model.eval()
rows = ["__base__", "a", "b", "a", "__base__", "b", "b"]
x = torch.randn(len(rows), 8)
with torch.no_grad():
    mixed = model(x, adapter_names=rows)
    alone = []
    for i, name in enumerate(rows):
        if name == "__base__":
            with model.disable_adapter():
                alone.append(model(x[i:i + 1]))
        else:
            model.set_adapter(name)
            alone.append(model(x[i:i + 1]))
    alone = torch.cat(alone)
print("max |mixed - alone|", float((mixed - alone).abs().max()))
tensors = {"x": x, "weight": layer.base_layer.weight, "bias": layer.base_layer.bias, "mixed": mixed, "alone": alone}
for name in configs:
    tensors[f"{name}.lora_A"] = layer.lora_A[name].weight
    tensors[f"{name}.lora_B"] = layer.lora_B[name].weight
save_file({k: v.detach().contiguous() for k, v in tensors.items()}, f"{out_dir}/tensors.safetensors")
with open(f"{out_dir}/config.json", "w") as f:
    json.dump({"adapters": configs, "rows": rows, "peft": __import__("peft").__version__}, f, indent=1)
    f.write("\n")
print("wrote", out_dir)

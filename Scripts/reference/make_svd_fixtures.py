"""Reference numbers for the SVD tools of the SD adapter-files issue (issue 16): extract, resize and
SVD merge must reach the optimal truncated-SVD error, clamp as kohya does, and choose dynamic ranks
by kohya's rules (less its off-by-one).

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_svd_fixtures.py

Writes Tests/Fixtures/sd/svd/:
  matrices.safetensors  m0 [16, 24] rank 3 + noise, m1 [8, 36] (a 3×3 conv flattened), m2 [20, 20] random,
                        and q (1,000 signed values) for the quantile
  expected.json         numpy's optimal relative residual ‖M − M_k‖_F / ‖M‖_F for k = 1, 2, 4, and of every module of
                        sd1-tiny-adapters/kohya.safetensors at rank 1 (resize); torch.quantile
                        of q at 0.5, 0.9, 0.99; for each matrix's singular values (numpy) and each dynamic rule,
                        kohya's rank (resize_lora.py's formulas verbatim) and the smallest rank meeting the rule
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

out = "Tests/Fixtures/sd/svd"
os.makedirs(out, exist_ok=True)
g = np.random.default_rng(3)
m0 = g.standard_normal((16, 3)) @ g.standard_normal((3, 24)) + 0.05 * g.standard_normal((16, 24))
m1 = g.standard_normal((8, 36)) * np.linspace(1, 0.1, 36)
m2 = g.standard_normal((20, 20))
q = g.standard_normal(1000)
mats = {"m0": m0, "m1": m1, "m2": m2}
save_file({k: torch.tensor(v, dtype=torch.float32) for k, v in mats.items()} | {"q": torch.tensor(q, dtype=torch.float32)},
          os.path.join(out, "matrices.safetensors"))

expected = {"residuals": {}, "quantiles": {}, "dynamic": {}}
for name, m in mats.items():
    m32 = m.astype(np.float32).astype(np.float64)
    u, s, vt = np.linalg.svd(m32, full_matrices=False)
    norm = np.linalg.norm(m32)
    expected["residuals"][name] = {str(k): float(np.linalg.norm(m32 - (u[:, :k] * s[:k]) @ vt[:k]) / norm) for k in (1, 2, 4)}


def kohya_rank(s, rule, param):
    """resize_lora.py's index formulas (sd-scripts @48d368fa), new_rank = index + 1."""
    s = torch.tensor(s)
    if rule == "sv_ratio":
        index = int(torch.sum(s > s[0] / param).item()) - 1 + 1
        index = max(1, min(index, len(s) - 1))
    elif rule == "sv_cumulative":
        cum = torch.cumsum(s, 0) / torch.sum(s)
        index = int(torch.searchsorted(cum, param)) + 1
        index = max(1, min(index, len(s) - 1))
    elif rule == "sv_fro":
        cum = torch.cumsum(s.pow(2), 0) / torch.sum(s.pow(2))
        index = int(torch.searchsorted(cum, param ** 2)) + 1
        index = max(1, min(index, len(s) - 1))
    return index + 1


def minimal_rank(s, rule, param):
    s = np.asarray(s, dtype=np.float64)
    if rule == "sv_ratio":
        return max(1, int(np.sum(s >= s[0] / param)))
    values = s ** 2 if rule == "sv_fro" else s
    target = param ** 2 if rule == "sv_fro" else param
    cum = np.cumsum(values) / np.sum(values)
    return max(1, int(np.argmax(cum >= target - 1e-12)) + 1)


for name, m in mats.items():
    s = np.linalg.svd(m.astype(np.float32).astype(np.float64), compute_uv=False).astype(np.float32)
    for rule, param in [("sv_ratio", 2.0), ("sv_ratio", 10.0), ("sv_fro", 0.9), ("sv_fro", 0.99), ("sv_cumulative", 0.5), ("sv_cumulative", 0.9)]:
        expected["dynamic"][f"{name} {rule}:{param}"] = {"singular": [float(x) for x in s], "kohya": kohya_rank(s.tolist(), rule, param),
                                                         "minimal": minimal_rank(s, rule, param)}
# Resizing the SD1 kohya fixture to rank 1: numpy's optimal relative residual of each module's ΔW = up · down.
from safetensors.torch import load_file  # noqa: E402
kohya = load_file("Tests/Fixtures/sd/sd1-tiny-adapters/kohya.safetensors")
expected["resize_rank1"] = {}
for key in sorted(k for k in kohya if k.endswith(".lora_down.weight")):
    module = key[: -len(".lora_down.weight")]
    down = kohya[key].double().flatten(1).numpy()
    up = kohya[module + ".lora_up.weight"].double().flatten(1).numpy()
    d = up @ down
    u, s, vt = np.linalg.svd(d, full_matrices=False)
    expected["resize_rank1"][module] = float(np.linalg.norm(d - (u[:, :1] * s[:1]) @ vt[:1]) / np.linalg.norm(d))
tq = torch.tensor(q, dtype=torch.float32)
for p in (0.5, 0.9, 0.99):
    expected["quantiles"][str(p)] = float(torch.quantile(tq, p))
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
    f.write("\n")
for k, v in expected["dynamic"].items():
    print(k, "kohya", v["kohya"], "minimal", v["minimal"])
print(expected["residuals"], expected["quantiles"])

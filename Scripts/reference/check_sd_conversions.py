"""Loads adapter files that `lora adapter convert` wrote into diffusers and checks that they fuse to
the reference merges of Tests/Fixtures/sd (issue 16: "a file we write in diffusers format loads in
diffusers and fuses to the same weights"). Run by hand, not in CI:

    D=Tests/Fixtures/sd; mkdir -p /tmp/cv
    for b in sd1-tiny sdxl-tiny; do for f in kohya peft diffusers-new diffusers-old; do for to in kohya diffusers; do
        .build/debug/lora adapter convert --input $D/$b-adapters/$f.safetensors --to $to --output /tmp/cv/$b-$f-$to.safetensors
    done; done; done
    ~/venvs/swift-lora-ref/bin/python Scripts/reference/check_sd_conversions.py /tmp/cv

Each file <base>-<name>-<format>.safetensors is loaded with load_lora_weights, fused at 0.7 and
compared with Tests/Fixtures/sd/<base>-merged/<name>.safetensors; the largest difference is printed.
"""
import glob
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from make_sd_lora_fixtures import MULT, StableDiffusionPipeline, StableDiffusionXLPipeline, merged_weights  # noqa: E402

folder = sys.argv[1]
worst_all = 0.0
for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
    stem = os.path.basename(path)[: -len(".safetensors")]
    base = "sdxl-tiny" if stem.startswith("sdxl-tiny") else "sd1-tiny"
    name = stem[len(base) + 1:].rsplit("-", 1)[0]
    reference = load_file(os.path.join("Tests/Fixtures/sd", f"{base}-merged", name + ".safetensors"))
    pipe_class = StableDiffusionXLPipeline if base == "sdxl-tiny" else StableDiffusionPipeline
    merged, _ = merged_weights(pipe_class, os.path.join("Tests/Fixtures/sd", base), path)
    missing = sorted(set(reference) - set(merged))
    worst = max((float((merged[k] - reference[k]).abs().max()) for k in reference if k in merged), default=float("inf"))
    worst_all = max(worst_all, worst)
    print(f"{stem}: diffusers fused {len(merged)} tensors, reference {len(reference)}, missing {len(missing)}, max |Δ| {worst:.2e}")
print(f"largest difference over every file: {worst_all:.2e}")

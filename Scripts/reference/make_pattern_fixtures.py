"""Writes Tests/Fixtures/module-patterns.json: Python's `re.fullmatch` (what PEFT uses for a
`target_modules` regex) and `re.match` end positions over real module paths, for the patterns
swift-lora's linear-time matcher (Sources/LoRA/ModulePattern.swift) supports.

    python Scripts/reference/make_pattern_fixtures.py --out Tests/Fixtures/module-patterns.json
"""
import argparse
import json
import re

PATHS = [
    "model.layers.0.self_attn.q_proj", "model.layers.11.self_attn.v_proj", "model.layers.3.mlp.down_proj",
    "model.embed_tokens", "lm_head", "bert.encoder.layer.0.attention.self.query",
    "bert.encoder.layer.5.attention.output.dense", "bert.pooler.dense", "classifier", "", "x",
    "model.layers.2.self_attn.o_proj.base_layer", "transformer.h.7.attn.c_attn", "a.b", "Q_PROJ", "naïve.ŝcalar_0",
]
PATTERNS = [
    r".*\.(q_proj|v_proj)", r"model\.layers\.\d+\.self_attn\.(q|k|v)_proj", r".*self_attn.*", r"^(?!.*lm_head).*$",
    r".*(?=v_proj)v_proj", r"(?:model|bert)\..*?\.(query|value|q_proj)", r"[a-z_]+", r"[^.]+", r".*layers\.[0-3]\..*",
    r".*\.\d{1,2}\..*", r"model\.layers\.1\d?\..*", r".*_proj$", r"\w+(\.\w+)*", r"(\w+\.)+dense", r"lm_head|classifier",
    r"x?", r"x*?", r"(a|b)+\.(a|b)", r".*[Qq]_(proj|PROJ)", r"[\d]+", r"\A.*head\Z", r"model\.{1}layers.*", r"(?P<m>model)\..*",
    r".*\.(?!q_proj)[a-z_]+", r"[.a-z_0-9]*", r"(.*)*x", r"(.*.*.*)*\.dense", r"(\w|\W|.)*query", r"a{0,3}\.b{1,}",
    r"na\wve\..*", r"\S+", r".*\.c_attn", r"[\w.]{5,}", r"(|x)", r"\.", r"[\]a]+", r"[a\-z]+", r"[-a]", r"\x41",
]
# Python answers the exponential patterns only on paths of up to 10 characters; the Swift test checks long ones too.
SLOW = {r"(.*)*x", r"(.*.*.*)*\.dense", r"(\w|\W|.)*query"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    cases = []
    for pattern in PATTERNS:
        regex = re.compile(pattern)
        for path in PATHS:
            if pattern in SLOW and len(path) > 10:
                continue
            m = regex.match(path)
            cases.append({"pattern": pattern, "path": path, "fullmatch": regex.fullmatch(path) is not None,
                          "match_end": m.end() if m else None})
    invalid = [p for p in [r"(unclosed", r"*x", r"a**", r"[z-a]", r"x{3,1}", r"\q", r"a)", r"[abc"]
               if not _compiles(p)]
    with open(out, "w") as f:
        json.dump({"python": "re, " + __import__("sys").version.split()[0], "cases": cases, "invalid": invalid}, f,
                  indent=1, ensure_ascii=False)
    print(f"wrote {len(cases)} cases and {len(invalid)} invalid patterns to {out}")


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
        return True
    except re.error:
        return False


if __name__ == "__main__":
    main()

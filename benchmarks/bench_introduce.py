"""Concept introduction: its cost against a plain answer, and the attention capture's memory.

    .venv/bin/python benchmarks/bench_introduce.py            # both tiny models, CPU
    .venv/bin/python benchmarks/bench_introduce.py --model ~/models/Qwen2.5-VL-7B-Instruct --json

(a) Time. Introducing one view (``introduce_view``: encode the image, prefill the shared prefix,
    answer the area question, answer the keywords question with the attention capture on, rank
    and select) against one plain generation on the same image: encode, prefill
    [image + "Describe the image."], then greedy decoding of *exactly* as many new tokens as the
    introduction generated (area + keywords answers, end-of-sequence ignored). Same run,
    interleaved, medians after warm-up. Target: ratio <= 1.3.
(b) Memory. The capture keeps ``H * N_w * N_r`` float32 rows per selected layer (and, during one
    layer's call, transient ``[H, q, T]`` scores); ``output_attentions=True`` with the eager
    kernel returns ``[1, H, T, T]`` per layer. Both are measured as tensor bytes on the same
    input ([prompt with the image; the generated keywords answer]). On CUDA the allocator's
    peak over the resident baseline is measured too. On the CPU there is no meaningful peak
    counter for torch (tracemalloc only sees Python objects), so tensor bytes are the measure.

The tiny models have RANDOM weights: their answers are gibberish of whatever length the
budget allows, so the token counts (and thus the ratios) are those of a maximal-length answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:  # run as a script (benchmarks/ on sys.path) or as a module of the repository
    from common import (
        cuda_sync,
        format_table,
        host_info,
        interleaved,
        random_shapes_backend,
        ratio,
        scene,
    )
except ImportError:  # pragma: no cover - depends on how the script is started
    from benchmarks.common import (
        cuda_sync,
        format_table,
        host_info,
        interleaved,
        random_shapes_backend,
        ratio,
        scene,
    )

from ego_ros.backends.base import BackendConfig
from ego_ros.backends.loading import load_backend
from ego_ros.backends.tiny import FAMILIES, SIZES, ensure_tiny_model, read_tiny_marker
from ego_ros.core.calibration import resolve_layers
from ego_ros.core.introduce import IntroduceConfig, introduce_view
from ego_ros.core.prompts import prompts_for

log = logging.getLogger("bench_introduce")
TARGET_RATIO = 1.3


def _prefix_state(backend, image: np.ndarray, question: str):
    """Encode, render [image + question], prefill up to and including the image."""
    visual = backend.encode_images([image])[0]
    segments = backend.render("<ego:img>" + question, {"img": visual})
    split = next(i for i, seg in enumerate(segments) if seg is visual) + 1
    prefix = backend.embed(segments[:split])
    _, state = backend.forward(prefix, None)
    return segments[split:], state, prefix.visual_spans[-1]


def introduction_tokens(backend, image: np.ndarray, layers, config: IntroduceConfig):
    """What ``introduce_view`` generates on ``image`` (greedy, so deterministic): the area and
    keywords answers' token counts, and the keyword capture used for the memory measure."""
    prompts = prompts_for(backend.family)
    area_rest, state, span = _prefix_state(backend, image, prompts.area)
    area = backend.generate(area_rest, state, max_new_tokens=config.area_max_new_tokens)
    kw_rest, state, span = _prefix_state(backend, image, prompts.keywords)
    capture = backend.attention_capture(layers, torch.arange(*span))
    keywords = backend.generate(kw_rest, state, max_new_tokens=config.keywords_max_new_tokens,
                                capture=capture)
    return len(area.token_ids), keywords, capture


@torch.inference_mode()
def plain_generation(backend, image: np.ndarray, new_tokens: int) -> None:
    """One plain "describe the image" answer of exactly ``new_tokens`` tokens."""
    visual = backend.encode_images([image])[0]
    segments = backend.render("<ego:img>" + prompts_for(backend.family).describe,
                              {"img": visual})
    logits, state = backend.prefill(segments)
    for _ in range(new_tokens - 1):
        token = int(torch.argmax(logits))
        emb = backend.embed([torch.tensor([token])], start_pos=state.next_pos)
        logits, state = backend.forward(emb, state)


def _eager_inputs(backend, image: np.ndarray, generated: list[int]) -> dict[str, torch.Tensor]:
    """Processor inputs for [keywords prompt with the image; the generated answer]."""
    question = prompts_for(backend.family).keywords
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": question}]}]
    text = backend.processor.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
    kwargs = {"crop_to_patches": False} if backend.family == "internvl" else {}
    inputs = backend.processor(text=[text], images=[image], return_tensors="pt", **kwargs)
    gen = torch.tensor([generated], dtype=torch.long)  # [1, n]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], gen], dim=1)  # [1, T]
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(gen)], dim=1)
    return {k: v.to(backend.device) for k, v in inputs.items()}


def eager_attention_bytes(backend, image: np.ndarray, generated: list[int],
                          ) -> tuple[int, int, int | None]:
    """``(bytes of all output_attentions tensors, sequence length, CUDA peak or None)`` from the
    same model switched to the eager kernel for one forward pass (then switched back)."""
    from ego_ros.backends.loading import attention_implementations

    model = backend.model
    inputs = _eager_inputs(backend, image, generated)
    peak = None
    cuda = backend.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(backend.device)
        base = torch.cuda.memory_allocated(backend.device)
        torch.cuda.reset_peak_memory_stats(backend.device)
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = model(**inputs, output_attentions=True)
    finally:
        model.set_attn_implementation(attention_implementations())
    if cuda:
        torch.cuda.synchronize(backend.device)
        peak = torch.cuda.max_memory_allocated(backend.device) - base
    total = sum(a.numel() * a.element_size() for a in out.attentions)
    seq = int(inputs["input_ids"].shape[1])
    del out
    return total, seq, peak


def capture_peak_cuda(backend, image, layers, config) -> int | None:
    """CUDA allocator peak of one introduction over the resident baseline (None on the CPU)."""
    if backend.device.type != "cuda":
        return None
    torch.cuda.synchronize(backend.device)
    base = torch.cuda.memory_allocated(backend.device)
    torch.cuda.reset_peak_memory_stats(backend.device)
    introduce_view(backend, image, layers, config)
    torch.cuda.synchronize(backend.device)
    return torch.cuda.max_memory_allocated(backend.device) - base


def bench_backend(label: str, backend, image: np.ndarray, repeats: int, warmup: int,
                  ) -> dict[str, Any]:
    config = IntroduceConfig()
    layers, source = resolve_layers(backend)
    n_area, keywords, capture = introduction_tokens(backend, image, layers, config)
    n_kw = len(keywords.token_ids)
    new_tokens = max(1, n_area + n_kw)
    timings = interleaved(
        {"introduce": lambda: introduce_view(backend, image, layers, config),
         "plain": lambda: plain_generation(backend, image, new_tokens)},
        repeats=repeats, warmup=warmup, sync=cuda_sync(backend.device))
    intro_ms, plain_ms = timings["introduce"].median_ms, timings["plain"].median_ms

    kept = sum(t.numel() * t.element_size() for rows in capture.rows.values() for t in rows)
    heads = next(iter(capture.rows.values()))[0].shape[0] if capture.rows else 0
    n_visual = int(capture.visual_index.numel())
    eager_bytes, seq_len, eager_peak = eager_attention_bytes(backend, image, keywords.token_ids)
    # One selected layer's call at a time: scores, masked scores and softmax, [H, 1, T] float32.
    transient = 3 * heads * seq_len * 4
    marker = read_tiny_marker(backend.config.path)
    return {
        "model": label,
        "family": backend.family,
        "random_weights": marker is not None or label.startswith("random-"),
        "device": str(backend.device),
        "dtype": str(backend.dtype).removeprefix("torch."),
        "image_hw": list(image.shape[:2]),
        "num_visual": n_visual,
        "layers": list(layers),
        "layers_source": source,
        "new_tokens": {"area": n_area, "keywords": n_kw, "total": new_tokens},
        "introduce": timings["introduce"].to_dict(),
        "plain": timings["plain"].to_dict(),
        "time_ratio": round(ratio(intro_ms, plain_ms), 3),
        "time_target": TARGET_RATIO,
        "memory": {
            "sequence_length": seq_len,
            "capture_kept_bytes": kept,
            "capture_transient_bytes": transient,
            "eager_output_attentions_bytes": eager_bytes,
            "eager_over_capture": round(ratio(eager_bytes, kept + transient), 1),
            "cuda_peak_capture_bytes": capture_peak_cuda(backend, image, layers, config),
            "cuda_peak_eager_bytes": eager_peak,
        },
    }


def _fmt_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="also benchmark this checkpoint folder")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny models")
    parser.add_argument("--random", action="append", default=[], metavar="SIZE",
                        help="also benchmark random weights with a real checkpoint's shapes, "
                             "built in memory (repeatable): qwen2.5-vl-3b, qwen2.5-vl-7b, "
                             "internvl3-2b, internvl3-8b")
    parser.add_argument("--depth-divisor", type=int, default=1, metavar="N",
                        help="with --random: divide the layer counts by N (a CPU run)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--size", default="480x640", help="image HxW (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's choice); 1 gives stable "
                             "timings on a busy shared machine")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    image = scene(7, (h, w))

    unknown = [s for s in args.random if s == "tiny" or s not in SIZES]
    if unknown:
        parser.error(f"unknown --random size {unknown[0]!r}; choose from "
                     f"{', '.join(s for s in SIZES if s != 'tiny')}")
    if args.depth_divisor != 1 and not args.random:
        parser.error("--depth-divisor applies to --random models only")

    def from_folder(path: Path):
        return lambda: load_backend(BackendConfig(path, dtype=args.dtype, device=args.device))

    def random(size: str):
        return lambda: random_shapes_backend(size, next(iter(SIZES[size])), device=args.device,
                                             dtype=args.dtype,
                                             depth_divisor=args.depth_divisor)

    models: list[tuple[str, object]] = []
    if not args.no_tiny:
        models += [(f"tiny-{f}", from_folder(ensure_tiny_model(f))) for f in FAMILIES]
    if args.model is not None:
        models.append((str(args.model), from_folder(args.model.expanduser())))
    models += [(f"random-{size}", random(size)) for size in args.random]
    results = []
    device = None
    for label, load in models:
        backend = load()
        device = backend.device
        results.append(bench_backend(label, backend, image, args.repeats, args.warmup))
        del backend
    report = {"benchmark": "introduce", "host": host_info(device), "results": results}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"host: {report['host']}")
    rows = [[r["model"], r["num_visual"], r["new_tokens"]["total"],
             r["introduce"]["median_ms"], r["plain"]["median_ms"], r["time_ratio"]]
            for r in results]
    print(format_table(rows, ["model", "N_r", "new tok", "introduce ms", "plain ms",
                              f"ratio (target <= {TARGET_RATIO})"]))
    print()
    rows = [[r["model"], r["memory"]["sequence_length"],
             _fmt_bytes(r["memory"]["capture_kept_bytes"]),
             _fmt_bytes(r["memory"]["capture_transient_bytes"]),
             _fmt_bytes(r["memory"]["eager_output_attentions_bytes"]),
             r["memory"]["eager_over_capture"]] for r in results]
    print(format_table(rows, ["model", "T", "capture kept", "capture transient",
                              "eager attentions", "eager / capture"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

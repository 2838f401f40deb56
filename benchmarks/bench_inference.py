"""What personalization costs at inference: Ego's memories against the plain LVLM, against
reference images in context, across 1 to 1,000 stored concepts, with and without prefix reuse.

    .venv/bin/python benchmarks/bench_inference.py                    # both tiny models, CPU
    .venv/bin/python benchmarks/bench_inference.py --quick --json     # a fast smoke run
    .venv/bin/python benchmarks/bench_inference.py --model ~/models/Qwen2.5-VL-7B-Instruct \\
        --device cuda --dtype bfloat16
    .venv/bin/python benchmarks/bench_inference.py --size qwen2.5-vl-7b --device cuda \\
        --dtype bfloat16                     # a real model's shapes, random weights, no files
    .venv/bin/python benchmarks/bench_inference.py --size qwen2.5-vl-3b --depth-divisor 4 \\
        --variants plain,ego_per_concept_10 --sizes none   # the same balance, on a CPU

Every number that enters a ratio is measured in the same run, interleaved round by round,
as the median of --repeats timings after --warmup untimed rounds. Variants (same query frame):

  plain                   the plain model, no concepts: query image + one yes/no question
                          (the text before the image prefilled once and cached)
  plain_per_concept_10    the plain model asking the same 10 per-concept questions as Ego,
                          the same way (shared words once, one tree pass), no memories:
                          ego_per_concept_10 / this is what the memories alone cost, this /
                          plain what asking 10 questions instead of one costs
  ego_per_concept_10      EgoEngine.recognize, 10 concepts, per-concept mode (10 questions,
                          all branching from one cached [memories + query] state and scored
                          in one batched pass), warm prefix
  ego_per_concept_10_no_reuse   the same with prefix_cache_size=0
  ego_per_concept_10_unbatched  the same with reuse but one forward pass per question
                          (score_batch=1) instead of all 10 questions in one batch
  ego_one_question_10     10 memories in context, one yes/no question (warm prefix)
  ego_one_question_10_no_reuse  the same with prefix_cache_size=0
  ego_one_concept         recognize(concepts=[one]): one memory in context, one question
  ego_joint_10_first_token      joint mode over 10 names, up to the first answer token
                          (decoding costs the same per token with or without memories)
  reference_images_10     what RAP/PeKit-style pipelines do: the 10 concepts' full reference
                          images re-encoded and placed in context, then the query, one question
  scaling                 one question with retrieval on (max_in_context 10) at 1..1000 stored
                          concepts, and the full per-concept recognize at each size

Concepts are introduced from generated scenes (a textured room and a patterned object); the
scaling stores are filled with jittered copies of them (``ConceptMemory`` with small noise
under new names) rather than 1,000 introductions. Tiny models are random: the ratios describe
the cost structure (tokens in context, passes over the model), not accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common

log = logging.getLogger("bench_inference")

FAMILIES = ("qwen2_5_vl", "internvl")
NAMES = ("my mug", "Anna", "my backpack", "Bob", "my keys", "Luna", "my laptop", "Max",
         "my plant", "my bike")
VARIANTS = ("plain", "plain_per_concept_10", "ego_per_concept_10",
            "ego_per_concept_10_no_reuse", "ego_per_concept_10_unbatched", "ego_one_question_10",
            "ego_one_question_10_no_reuse", "ego_one_concept", "ego_joint_10_first_token",
            "reference_images_10")
# ratio name: (numerator variant, denominator variant)
RATIOS = {
    "overhead_per_concept_10": ("ego_per_concept_10", "plain"),
    "overhead_per_concept_10_no_reuse": ("ego_per_concept_10_no_reuse", "plain"),
    "memories_cost_per_concept_10": ("ego_per_concept_10", "plain_per_concept_10"),
    "questions_cost_per_concept_10": ("plain_per_concept_10", "plain"),
    "overhead_one_question_10": ("ego_one_question_10", "plain"),
    "overhead_one_question_10_no_reuse": ("ego_one_question_10_no_reuse", "plain"),
    "overhead_one_concept": ("ego_one_concept", "plain"),
    "overhead_joint_10_first_token": ("ego_joint_10_first_token", "plain"),
    "reference_speedup": ("reference_images_10", "ego_one_question_10"),
    "reference_speedup_no_reuse": ("reference_images_10", "ego_one_question_10_no_reuse"),
    "prefix_reuse_speedup_per_concept_10": ("ego_per_concept_10_no_reuse", "ego_per_concept_10"),
    "prefix_reuse_speedup_one_question_10": ("ego_one_question_10_no_reuse",
                                             "ego_one_question_10"),
    "batching_speedup_per_concept_10": ("ego_per_concept_10_unbatched", "ego_per_concept_10"),
}
TARGETS = {  # name: (ratio key, comparison, bound), from issue 4
    "overhead <= 1.10 (per-concept, 10 concepts, reuse)": ("overhead_per_concept_10", "<=", 1.10),
    "vs reference images >= 4x": ("reference_speedup", ">=", 4.0),
    "1000 stored within 1.2x of 10": ("scaling_1000_vs_10", "<=", 1.2),
}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. ``model`` None means the offline tiny model of each family."""

    families: tuple[str, ...] = FAMILIES
    model: Path | None = None
    size: str = "tiny"  # a key of ego_ros.backends.tiny.SIZES (random weights, built in memory)
    depth_divisor: int = 1  # with a real size: keep the widths, divide the layer counts
    variants: tuple[str, ...] | None = None  # None: every variant
    device: str = "auto"
    dtype: str = "auto"
    repeats: int = 9
    warmup: int = 2
    sizes: tuple[int, ...] = (1, 10, 100, 1000)
    frame: tuple[int, int] = (640, 480)  # width, height
    real_concepts: int = 10

    def __post_init__(self) -> None:
        for name in ("repeats", "real_concepts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.real_concepts > len(NAMES):
            raise ValueError(f"real_concepts must be <= {len(NAMES)}, got {self.real_concepts}")
        if self.sizes and min(self.sizes) < 1:
            raise ValueError(f"sizes must be positive concept counts, got {self.sizes}")
        if self.variants is not None:
            unknown = sorted(set(self.variants) - set(VARIANTS))
            if unknown or "plain" not in self.variants:
                raise ValueError(f"variants must include plain and come from {', '.join(VARIANTS)}"
                                 f"; got {', '.join(self.variants)}")
        if self.depth_divisor < 1:
            raise ValueError(f"depth_divisor must be >= 1, got {self.depth_divisor}")
        if min(self.frame) < 28:
            raise ValueError(f"frame must be at least 28x28 pixels, got {self.frame}")
        bad = [f for f in self.families if f != "auto" and f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown family {bad[0]!r}; choose from {', '.join(FAMILIES)}")


# -- baselines built with the backend API ---------------------------------------------------------
class PlainModel:
    """The plain LVLM: the query image and one yes/no question, no concepts.

    A well-built plain pipeline caches what precedes the image (the chat header, the system
    prompt, "Query image:"), as Ego caches its memory prefix: that part is prefilled once,
    so a ratio against this baseline measures what the memories cost and nothing else."""

    def __init__(self, backend, prompts, name: str) -> None:
        from ego_ros.core.scoring import answer_variants

        self.backend = backend
        self.text = prompts.query_image + prompts.recognize_one.format(name=name)
        self.yes = backend.variant_ids(answer_variants("yes"))
        self.no = backend.variant_ids(answer_variants("no"))
        self._header = None  # (number of segments before the image, their cached state)

    def _from_query(self, frame) -> tuple[list, Any]:
        """The frame's segments from its image block on, and the cached header's state."""
        block = self.backend.encode_images([frame])[0]
        segments = self.backend.render(self.text, {"query": block})
        if self._header is None:
            first = next(i for i, seg in enumerate(segments) if seg is block)
            self._header = (first, self.backend.prefill(segments[:first])[1])
        first, state = self._header
        return segments[first:], state

    def __call__(self, frame) -> float:
        from ego_ros.core.scoring import yes_no_score

        segments, state = self._from_query(frame)
        logits, _ = self.backend.prefill(segments, state, keep_state=False)  # [V]
        return float(yes_no_score(logits, self.yes, self.no))


class PlainPerConcept(PlainModel):
    """The plain model asking the per-concept protocol's questions, with no memories: the
    same 10 questions, their shared words run once and each question's own rest as a branch
    of one tree pass, exactly as ``EgoEngine.recognize`` asks them (``split_shared_prefix``).
    Ego against this is what the memories alone cost the per-concept protocol."""

    def __init__(self, backend, prompts, names: Sequence[str]) -> None:
        super().__init__(backend, prompts, names[0])
        self.questions = [prompts.query_image + prompts.recognize_one.format(name=n)
                          for n in names]
        self._split = None  # (trunk, branches): text only, the same for every frame

    def __call__(self, frame) -> list[float]:
        import torch

        from ego_ros.core.engine import split_shared_prefix
        from ego_ros.core.scoring import yes_no_score

        segments, state = self._from_query(frame)
        block = segments[0]
        if self._split is None:
            tails = []
            for text in self.questions:
                rendered = self.backend.render(text, {"query": block})
                at = next(i for i, seg in enumerate(rendered) if seg is block)
                tails.append(torch.cat(rendered[at + 1:]))
            self._split = split_shared_prefix(tails)
        trunk, branches = self._split
        logits = self.backend.prefill_tree([block, trunk], branches, state)  # [N, V]
        return [float(yes_no_score(row, self.yes, self.no)) for row in logits]


class ReferenceImagesInContext(PlainModel):
    """RAP/PeKit-style: every concept's full reference image is re-encoded and put in context
    for each query, followed by the query and one yes/no question (nothing cached)."""

    def __init__(self, backend, prompts, names: Sequence[str], references: Sequence) -> None:
        super().__init__(backend, prompts, names[0])
        items = "".join(prompts.memory_item.format(name=n, key=f"r{i}")
                        for i, n in enumerate(names))
        self.text = prompts.memory_header + items + self.text
        self.references = list(references)

    def __call__(self, frame) -> float:
        from ego_ros.core.scoring import yes_no_score

        blocks = self.backend.encode_images([*self.references, frame])
        visuals = {f"r{i}": b for i, b in enumerate(blocks[:-1])} | {"query": blocks[-1]}
        segments = self.backend.render(self.text, visuals)
        logits, _ = self.backend.prefill(segments, keep_state=False)  # [V]
        return float(yes_no_score(logits, self.yes, self.no))


def one_question(engine, frame, name: str) -> float:
    """Ego with every in-context concept's memory (retrieval as configured, warm prefix when
    reuse is on) but a single yes/no question, about ``name``: the unit of work the
    per-concept protocol repeats once per concept."""
    from ego_ros.core.scoring import answer_variants, yes_no_score

    task = engine.prompts.recognize_one.format(name=name)
    logits = engine.next_token_logits([frame], task)  # [V]
    yes = engine.backend.variant_ids(answer_variants("yes"))
    no = engine.backend.variant_ids(answer_variants("no"))
    return float(yes_no_score(logits, yes, no))


# -- concepts ------------------------------------------------------------------------------------
def jittered(memory, name: str, generator, scale: float = 0.02):
    """``memory`` under ``name`` with Gaussian noise (``scale`` x the tokens' std) added, so
    copies are distinct for retrieval but cost exactly what the original costs."""
    import torch

    tokens = memory.tokens.float()
    noise = torch.randn(tokens.shape, generator=generator) * tokens.std() * scale  # [N, D]
    return dataclasses.replace(memory, name=name, tokens=(tokens + noise).to(memory.tokens.dtype))


def fill_store(root: Path, fingerprint, base: Sequence, count: int, seed: int = 0):
    """A store at ``root`` with ``count`` concepts: the ``base`` memories, then jittered copies."""
    import torch

    from ego_ros.core.store import MemoryStore

    store = MemoryStore(root, fingerprint)
    generator = torch.Generator().manual_seed(seed)
    memories = list(base[:count])
    for i in range(len(memories), count):
        source = base[i % len(base)]
        memories.append(jittered(source, f"{source.name} #{i}", generator))
    store.put_many(memories)
    return store


def introduce_all(backend, root: Path, references: Sequence, count: int) -> tuple[list, float]:
    """Introduce ``count`` concepts from their reference images; fill up to 10 with copies.

    Returns the 10 memories and the median introduction time in seconds."""
    import torch

    from ego_ros.core.engine import EgoEngine
    from ego_ros.core.store import MemoryStore

    store = MemoryStore(root, backend.fingerprint)
    engine = EgoEngine(backend, store)
    seconds = [engine.introduce(NAMES[i], [references[i]]).elapsed_s for i in range(count)]
    memories = [store.get(NAMES[i]) for i in range(count)]
    generator = torch.Generator().manual_seed(1)
    for i in range(count, len(NAMES)):
        memories.append(jittered(memories[i % count], NAMES[i], generator))
    seconds.sort()
    return memories, seconds[len(seconds) // 2]


# -- one model ----------------------------------------------------------------------------------
def load(cfg: BenchConfig, family: str):
    from ego_ros.backends.base import BackendConfig
    from ego_ros.backends.loading import load_backend
    from ego_ros.backends.tiny import ensure_tiny_model

    if cfg.model is None and cfg.size != "tiny":
        return common.random_shapes_backend(cfg.size, family, device=cfg.device,
                                            dtype=cfg.dtype, depth_divisor=cfg.depth_divisor)
    path = cfg.model if cfg.model is not None else ensure_tiny_model(family)
    return load_backend(BackendConfig(path, family=family, device=cfg.device, dtype=cfg.dtype))


def bench_model(cfg: BenchConfig, family: str, workdir: Path) -> dict[str, Any]:
    """Every measurement on one model; returns the JSON-ready result."""
    from ego_ros.core.engine import EgoEngine, EngineConfig

    backend = load(cfg, family)
    sync = common.cuda_sync(backend.device)
    width, height = cfg.frame
    size = (height, width)
    references = [common.scene(100 + i, size, objects=(i,), object_scale=0.6)
                  for i in range(len(NAMES))]
    frame = common.scene(7, size, objects=(0, 3))  # "my mug" and "Bob" in a room
    memories, introduce_s = introduce_all(backend, workdir / "introduced", references,
                                          cfg.real_concepts)
    ten = fill_store(workdir / "ten", backend.fingerprint, memories, len(NAMES))

    def engine(store=ten, **config):
        return EgoEngine(backend, store, EngineConfig(max_in_context=10, **config))

    reuse, no_reuse = engine(), engine(prefix_cache_size=0)
    unbatched = engine(score_batch=1)
    joint = engine(max_new_tokens=1)
    prompts = reuse.prompts
    plain = PlainModel(backend, prompts, NAMES[0])
    plain_questions = PlainPerConcept(backend, prompts, NAMES)
    reference = ReferenceImagesInContext(backend, prompts, NAMES, references)
    variants = {
        "plain": lambda: plain(frame),
        "plain_per_concept_10": lambda: plain_questions(frame),
        "ego_per_concept_10": lambda: reuse.recognize([frame]),
        "ego_per_concept_10_no_reuse": lambda: no_reuse.recognize([frame]),
        "ego_per_concept_10_unbatched": lambda: unbatched.recognize([frame]),
        "ego_one_question_10": lambda: one_question(reuse, frame, NAMES[0]),
        "ego_one_question_10_no_reuse": lambda: one_question(no_reuse, frame, NAMES[0]),
        "ego_one_concept": lambda: reuse.recognize([frame], concepts=[NAMES[0]]),
        "ego_joint_10_first_token": lambda: joint.recognize([frame], mode="joint"),
        "reference_images_10": lambda: reference(frame),
    }
    if cfg.variants is not None:
        variants = {k: v for k, v in variants.items() if k in cfg.variants}
    log.info("%s: timing %d variants", family, len(variants))
    timings = common.interleaved(variants, repeats=cfg.repeats, warmup=cfg.warmup, sync=sync)

    stores = {n: ten if n == len(NAMES) else
              fill_store(workdir / f"n{n}", backend.fingerprint, memories, n, seed=n)
              for n in cfg.sizes}
    scaled = {n: engine(store) for n, store in stores.items()}
    scale_variants = {}
    for n, eng in scaled.items():
        scale_variants[f"one_question@{n}"] = lambda e=eng: one_question(e, frame, NAMES[0])
        scale_variants[f"recognize@{n}"] = lambda e=eng: e.recognize([frame])
    log.info("%s: timing scaling at %s stored concepts", family, list(cfg.sizes))
    scale_timings = common.interleaved(scale_variants, repeats=cfg.repeats, warmup=cfg.warmup,
                                       sync=sync)

    med = {k: t.median_ms for k, t in timings.items()}
    scaling = []
    for n, eng in scaled.items():
        considered = eng.recognize([frame]).considered
        scaling.append({"stored": n, "considered": len(considered),
                        "one_question_ms": round(scale_timings[f"one_question@{n}"].median_ms, 3),
                        "recognize_ms": round(scale_timings[f"recognize@{n}"].median_ms, 3)})
    ratios = {name: common.ratio(med[a], med[b]) for name, (a, b) in RATIOS.items()
              if a in med and b in med}
    by_size = {row["stored"]: row for row in scaling}
    if 10 in by_size:
        largest = max(by_size)
        ratios[f"scaling_{largest}_vs_10"] = common.ratio(by_size[largest]["one_question_ms"],
                                                          by_size[10]["one_question_ms"])
        ratios[f"scaling_recognize_{largest}_vs_10"] = common.ratio(
            by_size[largest]["recognize_ms"], by_size[10]["recognize_ms"])
    query_tokens = backend.encode_images([frame])[0].num_tokens
    # every reference scene has the frame's size, so each has the query's token count
    reference_tokens = len(references) * query_tokens
    return {
        "family": backend.family,
        "model": str(backend.config.path),
        "tiny": cfg.model is None and cfg.size == "tiny",
        "size": None if cfg.model is not None else cfg.size,
        "depth_divisor": cfg.depth_divisor,
        "layers": backend.num_layers,
        "device": str(backend.device),
        "dtype": str(backend.dtype).removeprefix("torch."),
        "frame": [width, height],
        "tokens": {"query": query_tokens,
                   "memories_10": sum(m.num_tokens for m in memories),
                   "reference_images_10": reference_tokens},
        "introduce_s": round(introduce_s, 3),
        "latency_ms": {k: t.to_dict() for k, t in timings.items()},
        "scaling": scaling,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": check_targets(ratios),
        "prefix_cache": {"reuse_hits": reuse.stats["prefix_hits"],
                         "no_reuse_hits": no_reuse.stats["prefix_hits"]},
    }


def check_targets(ratios: dict[str, float]) -> list[dict[str, Any]]:
    """Each target of the issue with its measured value and whether it is met."""
    out = []
    for label, (key, op, bound) in TARGETS.items():
        value = ratios.get(key)
        if value is None and key.startswith("scaling_"):  # --sizes without 1000
            value = next((v for k, v in ratios.items()
                          if k.startswith("scaling_") and "recognize" not in k), None)
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out.append({"target": label, "ratio": key, "value": value, "bound": bound, "met": met})
    return out


# -- output ---------------------------------------------------------------------------------------
def report(result: dict[str, Any]) -> str:
    """The tables and ratios of one model as text."""
    lat = result["latency_ms"]
    rows = [(name, t["median_ms"], t["min_ms"], common.ratio(t["median_ms"],
                                                           lat["plain"]["median_ms"]))
            for name, t in lat.items()]
    tok = result["tokens"]
    lines = [
        f"== {result['family']} ({'tiny random' if result['tiny'] else result['model']}, "
        f"{result['layers']} LLM layers) on "
        f"{result['device']}, {result['dtype']}; frame {result['frame'][0]}x{result['frame'][1]}"
        f" -> {tok['query']} query tokens; 10 memories {tok['memories_10']} tokens vs 10 "
        f"reference images {tok['reference_images_10']} tokens",
        common.format_table(rows, ("variant", "median ms", "min ms", "x plain")),
        "",
    ]
    if result["scaling"]:
        lines += [common.format_table([(r["stored"], r["considered"], r["one_question_ms"],
                                        r["recognize_ms"]) for r in result["scaling"]],
                                      ("stored", "in context", "1 question ms", "recognize ms")),
                  ""]
    lines += [
        common.format_table(list(result["ratios"].items()), ("ratio", "value")),
        "",
    ]
    for t in result["targets"]:
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"target {t['target']}: {value} -> {verdict}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> tuple[BenchConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=FAMILIES,
                        help="one family (default: both tiny models; with --model: auto)")
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="a real checkpoint folder instead of the tiny random models")
    parser.add_argument("--size", default="tiny", metavar="NAME",
                        help="random weights with the shapes of a real checkpoint, built in "
                             "memory (no files): tiny (default), qwen2.5-vl-3b, qwen2.5-vl-7b, "
                             "internvl3-2b or internvl3-8b")
    parser.add_argument("--depth-divisor", type=int, default=1, metavar="N",
                        help="with --size: keep the widths, divide the layer counts by N (a "
                             "CPU run that keeps the vision tower / LLM balance)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 9; --quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default 2; --quick 1)")
    parser.add_argument("--sizes", help="stored-concept counts for scaling (default "
                                        "1,10,100,1000; --quick 1,10,100); none skips scaling")
    parser.add_argument("--variants", metavar="A,B",
                        help=f"time only these (plain is always needed): {', '.join(VARIANTS)}")
    parser.add_argument("--frame", default="640x480", help="query frame WxH (default 640x480)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's choice); 1 makes CPU timings "
                             "less sensitive to other jobs on a small shared machine")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 real concepts, fewer repeats and sizes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="print the tables of a saved --json run and exit (measures nothing)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    if args.size != "tiny" and args.model is not None:
        parser.error("--size builds a random model; it cannot be combined with --model")
    from ego_ros.backends.tiny import SIZES

    if args.size not in SIZES:
        parser.error(f"unknown --size {args.size!r}; choose from {', '.join(SIZES)}")
    if args.depth_divisor != 1 and args.size == "tiny":
        parser.error("--depth-divisor applies to a real --size only")
    if args.size != "tiny" and args.family and args.family not in SIZES[args.size]:
        parser.error(f"--size {args.size} is a {', '.join(SIZES[args.size])} model, "
                     f"not {args.family}")
    families = ((args.family,) if args.family else
                ("auto",) if args.model else
                FAMILIES if args.size == "tiny" else tuple(SIZES[args.size]))
    default_sizes = "1,10,100" if args.quick else "1,10,100,1000"
    sizes = args.sizes or default_sizes
    try:
        width, height = (int(x) for x in args.frame.lower().split("x"))
        cfg = BenchConfig(
            families=families, model=args.model, device=args.device, dtype=args.dtype,
            size=args.size, depth_divisor=args.depth_divisor,
            variants=tuple(args.variants.split(",")) if args.variants else None,
            repeats=args.repeats or (3 if args.quick else 9),
            warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
            sizes=() if sizes == "none" else tuple(int(x) for x in sizes.split(",")),
            frame=(width, height), real_concepts=2 if args.quick else len(NAMES))
    except ValueError as exc:
        parser.error(str(exc))
    return cfg, args


def host_line(host: dict[str, Any]) -> str:
    return (f"host: {host['cpu']} ({host['cpu_cores']} cores, {host['torch_threads']} torch "
            f"threads){', GPU ' + host['gpu'] if 'gpu' in host else ''}; torch "
            f"{host['torch']}, transformers {host['transformers']}")


def print_saved(path: Path) -> int:
    """The text tables of a ``--json`` run saved at ``path``."""
    try:
        data = json.loads(path.read_text())
        results, host = data["results"], data["host"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"--report: cannot read a bench_inference --json run from {path}: "
                         f"{exc}") from None
    for result in results:
        print(report(result))
        print()
    print(host_line(host))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    if args.report is not None:
        return print_saved(args.report)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ego-bench-") as tmp:
        for family in cfg.families:
            workdir = Path(tmp) / family
            results[family] = bench_model(cfg, family, workdir)
            if not args.json:
                print(report(results[family]), flush=True)
                print()
    devices = {r["device"] for r in results.values()}
    import torch

    device = torch.device(devices.pop()) if len(devices) == 1 else None
    out = {"benchmark": "inference", "host": common.host_info(device),
           "settings": {"repeats": cfg.repeats, "warmup": cfg.warmup, "sizes": list(cfg.sizes),
                        "frame": list(cfg.frame), "real_concepts": cfg.real_concepts},
           "results": list(results.values())}
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(host_line(out["host"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

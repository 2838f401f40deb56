"""Load an LVLM checkpoint folder into an :class:`LVLMBackend`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

from ego_ros.backends.attention import register as register_attention
from ego_ros.backends.base import BackendConfig, BackendError, FamilyAdapter, LVLMBackend
from ego_ros.backends.internvl import InternVLAdapter
from ego_ros.backends.qwen2_5_vl import Qwen25VLAdapter
from ego_ros.backends.weights import check_weight_files
from ego_ros.core.memory import fingerprint_from_config

log = logging.getLogger(__name__)

ADAPTERS: tuple[type[FamilyAdapter], ...] = (Qwen25VLAdapter, InternVLAdapter)
FAMILIES = {a.family: a for a in ADAPTERS}


def detect_family(config: BackendConfig) -> type[FamilyAdapter]:
    """The adapter for ``config``: by name, or from ``config.json``'s ``model_type``."""
    if config.family != "auto":
        try:
            return FAMILIES[config.family]
        except KeyError:
            raise BackendError(f"model.family {config.family!r} is not supported; choose auto or "
                               f"one of {', '.join(FAMILIES)}") from None
    cfg_file = config.path / "config.json"
    try:
        model_type = json.loads(cfg_file.read_text())["model_type"]
    except (OSError, ValueError, KeyError) as exc:
        raise BackendError(f"cannot read model_type from {cfg_file}: {exc}") from None
    return adapter_for_type(model_type, f"{config.path}: ")


def adapter_for_type(model_type: str, where: str = "") -> type[FamilyAdapter]:
    """The adapter whose family has ``model_type`` (a config's ``model_type``)."""
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise BackendError(f"{where}model_type {model_type!r} is not supported "
                       f"(supported families: {', '.join(FAMILIES)})")


def fingerprint_of_folder(config: BackendConfig):
    """The fingerprint of the checkpoint at ``config.path`` from its config alone, without
    loading weights (equal to the loaded backend's: both hash the same config dict)."""
    from transformers import AutoConfig

    adapter_cls = detect_family(config)
    try:
        hf_config = AutoConfig.from_pretrained(config.path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read the model config in {config.path}: {exc}") from exc
    return _fingerprint(adapter_cls, hf_config)


def _fingerprint(adapter_cls: type[FamilyAdapter], hf_config):
    hidden = int(hf_config.get_text_config().hidden_size)
    return fingerprint_from_config(adapter_cls.family, hidden, hf_config.to_dict())


def load_backend(config: BackendConfig) -> LVLMBackend:
    """Load the checkpoint at ``config.path`` (a local folder; nothing is downloaded).

    Its weights must be safetensors unless ``config.allow_pickle_weights`` (see
    :func:`~ego_ros.backends.weights.check_weight_files`)."""
    if not config.path.is_dir():
        raise BackendError(f"model folder {config.path} does not exist or is not a folder")
    if not (config.path / "config.json").is_file():
        raise BackendError(f"{config.path} is not a Hugging Face model folder (no config.json)")
    adapter_cls = detect_family(config)
    # Refuse pickled weights before transformers sees the folder (see backends/weights.py).
    use_safetensors = check_weight_files(config.path, config.allow_pickle_weights)
    device = config.resolved_device()
    dtype = config.resolved_dtype(device)

    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar is noise in logs and CLI output
    started = time.perf_counter()
    try:
        processor = AutoProcessor.from_pretrained(config.path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(
            config.path, dtype=dtype, local_files_only=True, use_safetensors=use_safetensors,
            attn_implementation=attention_implementations())
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot load the model in {config.path}: {exc}") from exc
    model.to(device).eval()
    log.info("loaded %s (%s) on %s as %s in %.1f s", config.path, adapter_cls.family, device,
             dtype, time.perf_counter() - started)
    return backend_from_model(model, processor, config)


def attention_implementations() -> dict[str, str]:
    """What every backend runs: the capturing SDPA in the LLM, stock SDPA elsewhere."""
    return {"text_config": register_attention(), "vision_config": "sdpa", "": "sdpa"}


def backend_from_model(model, processor, config: BackendConfig) -> LVLMBackend:
    """Wrap a loaded (or built, see :func:`random_backend`) model and its processor.

    The model must use :func:`attention_implementations`; the family is detected from its
    ``model_type`` unless ``config.family`` names it."""
    model_type = model.config.model_type
    adapter_cls = adapter_for_type(model_type)
    if config.family not in ("auto", adapter_cls.family):
        raise BackendError(f"model.family is {config.family!r} but the model is a "
                           f"{adapter_cls.family} ({model_type})")
    fingerprint = _fingerprint(adapter_cls, model.config)
    return LVLMBackend(adapter_cls(model, processor, config.max_image_tokens), config,
                       fingerprint)


def random_backend(family: str, size: str, config: BackendConfig | None = None, *,
                   depth_divisor: int = 1, seed: int = 0) -> LVLMBackend:
    """A backend over a random-weight model of a real checkpoint's shapes
    (``ego_ros.backends.tiny.SIZES``), built directly on the device: benchmarks of realistic
    cost without a checkpoint and without writing gigabytes. ``config.path`` is only a label.
    Its outputs are meaningless."""
    from ego_ros.backends.tiny import build_model

    config = config or BackendConfig(path=f"<random {size}>", family=family)
    if config.family not in ("auto", family):
        raise BackendError(f"random_backend: config.family {config.family!r} is not {family!r}")
    device = config.resolved_device()
    started = time.perf_counter()
    model, processor = build_model(family, seed, size=size, depth_divisor=depth_divisor,
                                   device=device, dtype=config.resolved_dtype(device),
                                   attn_implementation=attention_implementations())
    log.info("built a random %s %s (depth / %d) on %s in %.1f s", size, family, depth_divisor,
             device, time.perf_counter() - started)
    return backend_from_model(model, processor, replace(config, family=family))

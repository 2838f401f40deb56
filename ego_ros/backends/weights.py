"""Which weight files of a checkpoint folder transformers would read, and whether that is safe.

    check_weight_files(folder, allow_pickle) -> use_safetensors for ``from_pretrained``

``config.json`` (its ``transformers_weights`` entry, which transformers follows first), then
``model.safetensors`` / ``model.safetensors.index.json`` (and every shard the index names) are
looked at before anything is loaded. safetensors files are plain tensors; ``.bin``/``.pt``
weights are pickles, and unpickling a file can run code of its author's choosing (torch's
``weights_only`` loader narrows that but is still an unpickler). So a folder whose weights
would be unpickled is refused with a :class:`BackendError` naming the opt-in, unless
``allow_pickle`` (``BackendConfig.allow_pickle_weights``) is set; with it, transformers still
prefers safetensors where a folder has both. Processors (tokenizer, image and video processors,
chat template) of the supported families read JSON and text files only and need no check.
"""

from __future__ import annotations

import json
from pathlib import Path

from ego_ros.backends.base import BackendError

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
OPT_IN = ("model.allow_pickle_weights:=true (node parameter), --allow-pickle-weights "
          "(ego-ros commands and the worker) or BackendConfig(allow_pickle_weights=True)")


def _refuse(folder: Path, what: str) -> BackendError:
    return BackendError(
        f"{folder}: {what}; loading pickled weights can run code hidden in the file, so it is "
        f"refused. Convert the checkpoint to safetensors, or if you trust its source allow "
        f"pickled weights with {OPT_IN}")


def _is_safe_name(name: str) -> bool:
    return name.endswith(".safetensors") or name.endswith(".safetensors.index.json")


def check_weight_files(folder: Path, allow_pickle: bool) -> bool | None:
    """Raise :class:`BackendError` if ``from_pretrained`` would unpickle weights in ``folder``
    and ``allow_pickle`` is False; return the ``use_safetensors`` argument to pass (True:
    safetensors only; None with ``allow_pickle``: transformers' own choice)."""
    folder = Path(folder)
    if allow_pickle:
        return None
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {folder / 'config.json'}: {exc}") from None
    explicit = config.get("transformers_weights") if isinstance(config, dict) else None
    if explicit is not None and not (isinstance(explicit, str) and _is_safe_name(explicit)):
        raise _refuse(folder, f"config.json names the weights file {explicit!r:.200}, which is "
                              "not safetensors")
    index = folder / SAFE_INDEX
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"cannot read the shard index {index}: {exc!r:.200}") from None
        unsafe = sorted(str(s)[:200] for s in shards if not (isinstance(s, str)
                                                             and s.endswith(".safetensors")))
        if unsafe:
            raise _refuse(folder, f"{SAFE_INDEX} names non-safetensors shards {unsafe[:3]}")
        return True
    if (folder / SAFE_WEIGHTS).is_file():
        return True
    pickles = sorted(p.name for p in folder.iterdir()
                     if p.is_file() and p.name.endswith(PICKLE_SUFFIXES + (".bin.index.json",)))
    if pickles:
        raise _refuse(folder, f"it has no {SAFE_WEIGHTS}, only pickled weights "
                              f"({', '.join(pickles[:4])})")
    raise BackendError(f"{folder} has no weights: no {SAFE_WEIGHTS} or {SAFE_INDEX}")

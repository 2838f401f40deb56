"""Helpers shared by the subcommands that load a model, a store or image files.

Everything heavy (torch, transformers, OpenCV) is imported inside the functions, so building
the parsers for ``--help`` stays instant. Every failure a user can cause (a wrong folder, an
unreadable image, a bad option value) becomes a :class:`CliError` whose message names the
path or value to fix.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ego_ros.cli.common import CliError

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--model DIR`` plus ``--family``, ``--dtype`` and ``--device``."""
    parser.add_argument("--model", type=Path, metavar="DIR", required=required,
                        help="local Hugging Face checkpoint folder (nothing is downloaded)")
    parser.add_argument("--family", default="auto",
                        help="model family: auto (from config.json), qwen2_5_vl or internvl "
                             "(default: %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="weights dtype; auto = bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or cuda:N; asking for CUDA without a GPU is an "
                             "error (default: %(default)s)")
    parser.add_argument("--max-image-tokens", type=int, default=None, metavar="N",
                        help="cap on one image's visual tokens (Qwen2.5-VL's dynamic "
                             "resolution); default: the checkpoint's own limit")
    parser.add_argument("--allow-pickle-weights", action="store_true",
                        help="load a folder that has only pickled .bin weights (unpickling can "
                             "run code from the file: only for checkpoints you trust); "
                             "default: safetensors weights only")


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, metavar="DIR", required=True,
                        help="concept memory store folder (created on first write)")


def check_model_dir(path: Path) -> Path:
    """Fail fast, before importing torch, when ``path`` cannot be a checkpoint folder."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CliError(f"model folder {path} does not exist or is not a folder")
    if not (path / "config.json").is_file():
        raise CliError(f"{path} is not a Hugging Face model folder (no config.json)")
    return path


def backend_config(args: argparse.Namespace) -> Any:
    """The ``BackendConfig`` the options describe (invalid values -> ``CliError``)."""
    from ego_ros.backends.base import BackendConfig

    path = check_model_dir(args.model)
    try:
        return BackendConfig(path, family=args.family, dtype=args.dtype, device=args.device,
                             max_image_tokens=getattr(args, "max_image_tokens", None),
                             allow_pickle_weights=getattr(args, "allow_pickle_weights", False))
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def load_model(args: argparse.Namespace) -> Any:
    """Load the backend named by ``--model`` and friends."""
    from ego_ros.backends.base import BackendError
    from ego_ros.backends.loading import load_backend

    config = backend_config(args)
    try:
        return load_backend(config)
    except BackendError as exc:
        raise CliError(str(exc)) from exc


def model_fingerprint(args: argparse.Namespace) -> Any:
    """The fingerprint of ``--model`` read from its config alone, without loading the weights
    (for checks such as ``concepts import --model``). Equal to the loaded backend's
    fingerprint: both hash ``AutoConfig``'s dict, which is what the model carries."""
    from ego_ros.backends.base import BackendError
    from ego_ros.backends.loading import fingerprint_of_folder

    config = backend_config(args)
    try:
        return fingerprint_of_folder(config)
    except BackendError as exc:
        raise CliError(str(exc)) from exc


def check_images(paths: Sequence[Path]) -> list[Path]:
    """Paths that exist and are files (checked before a model is loaded)."""
    out = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_file():
            raise CliError(f"image {path} does not exist or is not a file")
        out.append(path)
    return out


def read_image(path: Path) -> Any:
    """An image file as an RGB uint8 array ``[H, W, 3]`` (any format OpenCV reads)."""
    import cv2

    path = Path(path).expanduser()
    if not path.is_file():
        raise CliError(f"image {path} does not exist or is not a file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CliError(f"cannot read image {path}: not an image format OpenCV can decode "
                       "(or the file is damaged)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """``"1,2,3"`` -> ``(1, 2, 3)``; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        layers = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CliError(f"--layers must be comma-separated layer numbers like 12,13,14; "
                       f"got {text!r}") from None
    if not layers:
        raise CliError(f"--layers must name at least one layer, got {text!r}")
    return layers

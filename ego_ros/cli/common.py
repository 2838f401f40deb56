"""Helpers shared by the subcommands."""

from __future__ import annotations

import json
import math
import sys
from typing import Any


class CliError(Exception):
    """An error a person can act on: printed without a traceback, exit code 2."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN/Infinity
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def print_json(obj: Any) -> None:
    """Print one strict-JSON object on stdout (NaN becomes null)."""
    json.dump(_clean(obj), sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    sys.stdout.flush()

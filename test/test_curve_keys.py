"""CurveZMQ key files as ``ego-ros worker --gen-keys`` writes them: the secret is private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ego_ros.serving.worker import generate_keys  # what --gen-keys runs (no torch import)


def test_gen_keys_writes_the_secret_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask, under which pyzmq's files are world-readable
    try:
        generate_keys(tmp_path, "robot1")
    finally:
        os.umask(previous)
    secret = stat.S_IMODE((tmp_path / "robot1.key_secret").stat().st_mode)
    public = stat.S_IMODE((tmp_path / "robot1.key").stat().st_mode)
    assert secret == 0o600, oct(secret)
    assert public & stat.S_IRUSR  # the public key is meant to be copied around

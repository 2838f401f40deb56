"""The import rule of DESIGN.md: lower layers never import upper ones, and the method core is
usable with no ROS (and no transformers or ZeroMQ) installed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ego_ros"

# package -> module prefixes it must never import
FORBIDDEN = {
    "core": ("rclpy", "transformers", "zmq", "ego_ros.backends", "ego_ros.serving", "ego_ros.ros",
             "ego_ros.bag", "ego_ros.eval", "ego_ros.cli", "sensor_msgs", "ego_interfaces"),
    "backends": ("rclpy", "zmq", "ego_ros.serving", "ego_ros.ros", "ego_ros.bag",
                 "ego_ros.eval", "ego_ros.cli", "sensor_msgs", "ego_interfaces"),
    "serving": ("rclpy", "ego_ros.ros", "ego_ros.bag", "ego_ros.eval", "ego_ros.cli",
                "sensor_msgs", "ego_interfaces"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_upper_ones(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules in ego_ros/{package}"
    bad = [f"{f.relative_to(ROOT.parent)} imports {name}" for f in files for name in _imports(f)
           if any(name == p or name.startswith(p + ".") for p in FORBIDDEN[package])]
    assert not bad, "\n".join(bad)


def test_core_imports_without_ros_or_transformers():
    """Import the whole core in a fresh interpreter where rclpy, transformers and zmq are
    blocked, as on a notebook machine with only torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'rclpy', 'transformers', 'zmq'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import importlib, pkgutil, ego_ros.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module('ego_ros.core.' + m.name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")

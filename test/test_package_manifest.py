"""What rosdep and colcon read from the repository: package.xml's keys, the paths the README
gives them, and the test dependency colcon's pytest step looks for in setup.py.

Each check reads the files the way the tool does (catkin_pkg's crawler, which rosdep and colcon
use; distutils' ``run_setup``, which colcon-python-setup-py runs), without the tools installed.
``test/test_ros2_tools.py`` runs the real colcon where ``../shared/ros2-tools`` exists.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

catkin_packages = pytest.importorskip("catkin_pkg.packages")

ROOT = Path(__file__).resolve().parents[1]


def _manifest(path: Path):
    from catkin_pkg.package import parse_package

    return parse_package(str(path))


def _readme_command(tool: str) -> list[str]:
    """The README's shell command that starts with ``tool`` (continuation lines joined)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(tool)]
    assert len(lines) == 1, f"expected one '{tool}' command in README.md, found {lines}"
    return shlex.split(lines[0])


def _paths_after(argv: list[str], option: str) -> list[str]:
    start = argv.index(option) + 1
    end = next((i for i in range(start, len(argv)) if argv[i].startswith("-")), len(argv))
    return argv[start:end]


def test_package_xml_has_only_real_keys():
    pkg = _manifest(ROOT / "package.xml")
    assert pkg.get_build_type() == "ament_python"
    # ament_python is a build type, not a rosdep key: `rosdep install` failed on it
    assert [d.name for d in pkg.buildtool_depends] == []
    keys = {d.name for d in pkg.exec_depends + pkg.test_depends}
    # pip-only dependencies are installed with pip (README), not named as rosdep keys
    assert not {k for k in keys if k.endswith("-pip")}, keys
    assert "python3-pytest" in {d.name for d in pkg.test_depends}


def test_every_ros_package_imported_at_run_time_is_an_exec_depend():
    index = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
    if not index.is_dir():
        pytest.skip(f"no ament index at {index} to tell ROS packages from others")
    ros_packages = {p.name for p in index.iterdir()}
    imported: set[str] = set()
    for path in [*(ROOT / "ego_ros").rglob("*.py"), *(ROOT / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    needed = (imported & ros_packages) - {"ego_ros"}
    declared = {d.name for d in _manifest(ROOT / "package.xml").exec_depends}
    assert "rclpy" in needed and "rcl_interfaces" in needed
    assert needed <= declared, f"imported but not in package.xml: {sorted(needed - declared)}"


def test_rosdep_and_colcon_get_the_same_paths_and_find_both_packages(tmp_path):
    rosdep = _readme_command("rosdep install")
    colcon = _readme_command("python -m colcon build")
    from_paths, base_paths = _paths_after(rosdep, "--from-paths"), _paths_after(colcon,
                                                                               "--base-paths")
    assert from_paths == base_paths
    # The README's workspace: the repository cloned to src/ego_ros.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ego_ros").symlink_to(ROOT, target_is_directory=True)
    found = set()
    for path in from_paths:
        found |= {pkg.name for pkg in
                  catkin_packages.find_packages(str(tmp_path / path)).values()}
    assert found == {"ego_ros", "ego_interfaces"}


def test_colcon_sees_pytest_as_the_test_dependency():
    # colcon-python-setup-py reads setup.py like this; colcon's pytest step runs only when
    # tests_require or extras_require["test"] names pytest (else unittest: 0 tests).
    code = ("from distutils.core import run_setup; "
            "dist = run_setup('setup.py', script_args=('--dry-run',), stop_after='config'); "
            "print(repr((getattr(dist, 'tests_require', None), dist.extras_require)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    tests_require, extras = ast.literal_eval(out.strip().splitlines()[-1])
    test_extras = [re.split(r"[ <>=!]", req)[0] for req in extras.get("test", [])]
    assert "pytest" in test_extras or "pytest" in (tests_require or [])
    # and pytest, run by colcon in the package folder, collects test/ only
    cfg = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    assert re.search(r"^\[tool:pytest\]\s*\n(?:#.*\n)*testpaths\s*=\s*test\s*$", cfg, re.M)

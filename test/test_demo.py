"""``ego-ros demo`` (the README's main command) end to end, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_tells_the_whole_story(tmp_path, tiny_model_dirs):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "ego_ros.cli.main", "demo", "--out", str(out),
                          "--frames", "30"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "live" and summary["concepts"] == 3
    assert summary["frames_evaluated"] >= 1
    assert 0.0 <= summary["recognition"]["precision"] <= 1.0
    assert summary["vqa"]["questions"] == 3  # one labelled A/B question per object, via ~/ask
    assert 0.0 <= summary["vqa"]["accuracy"] <= 1.0
    log = run.stderr
    assert "RANDOM weights" in log  # it says plainly that the answers mean nothing
    assert "taught kiro from frames captured by the camera" in log
    assert "recognition @" in log and "answer to 'What is kiro next to?'" in log
    assert "ego-ros demo --model" in log  # the command to rerun it with a real checkpoint
    for name in ("report.md", "report.json", "pr_curves.png"):
        assert (out / "report" / name).is_file()
    # a second run replaces its own output; a foreign folder is refused
    again = subprocess.run([sys.executable, "-m", "ego_ros.cli.main", "demo", "--out", str(out),
                            "--frames", "15"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    refused = subprocess.run([sys.executable, "-m", "ego_ros.cli.main", "demo", "--out",
                              str(foreign)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "not written by the demo" in refused.stderr
    assert (foreign / "thesis.tex").read_text() == "precious"

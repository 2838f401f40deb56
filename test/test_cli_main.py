"""The ``ego-ros`` entry point: help for every command, clear errors for unknown ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ego_ros.cli.main import SUBCOMMANDS, build_parser, main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ego_ros.cli.main", *args],
                          capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_every_command():
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    for module in SUBCOMMANDS:
        assert module.replace("_", "-") in out.stdout


@pytest.mark.parametrize("module", SUBCOMMANDS)
def test_each_subcommand_has_help(module, capsys):
    command = module.replace("_", "-")
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"ego-ros {command}" in text
    assert len(text.splitlines()) > 3  # more than a bare usage line


def test_nested_subcommands_have_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, child in sub.choices.items():
        nested = [a for a in child._actions if getattr(a, "choices", None)
                  and a.__class__.__name__ == "_SubParsersAction"]
        for action in nested:
            for leaf in action.choices:
                with pytest.raises(SystemExit) as exc:
                    main([name, leaf, "--help"])
                assert exc.value.code == 0, f"{name} {leaf} --help"
    capsys.readouterr()


def test_unknown_subcommand_fails_clearly():
    out = _run("teleport")
    assert out.returncode != 0
    assert "invalid choice: 'teleport'" in out.stderr


def test_no_subcommand_fails_clearly():
    out = _run()
    assert out.returncode != 0
    assert "required: COMMAND" in out.stderr or "COMMAND" in out.stderr

"""The CLI without an engine: help, validation, listings and clean error exits."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "validate", "strategies", "models", "prompts"):
        assert cmd in out


def test_validate_quickstart(capsys):
    assert main(["validate", "configs/quickstart.yaml"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "top_p(top_p=0.9)" in out and "facts (77)" in out


def test_bad_config_exits_2_with_message_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [smollm2-135m]\nprompt_sets: [tiny]\nstrategies: [{name: top_p, top_p: 1.5}]\n")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "top_p must be in (0, 1], got 1.5" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr


def test_strategies_and_prompts_listings(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "top_p  [native, seeded]" in out and "top_p = 0.9" in out
    assert main(["prompts"]) == 0
    assert "facts  (77 prompts, with references)" in capsys.readouterr().out

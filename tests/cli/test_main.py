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
    for cmd in ("run", "validate", "strategies", "models", "prompts", "doctor"):
        assert cmd in out


def test_validate_quickstart(capsys):
    assert main(["validate", "configs/quickstart.yaml"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "top_p(top_p=0.9)" in out and "facts (40)" in out and "open_ended (12)" in out
    assert "units: 7; rows: 364" in out  # sized to finish in minutes on a CPU without AVX-512


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
    assert main(["prompts"]) == 0  # the same list as 'deceval tasks'
    facts = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("facts "))
    assert facts.split()[1] == "77" and "Apache-2.0" in facts


def test_embedded_ray_start_prints_no_token_notice():
    """A local run's embedded Ray keeps token auth on without telling the user about it."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = ("from harness.driver.placement import start_ray; start_ray(None, verbose=False); "
            "from ray._raylet import AuthenticationMode, get_authentication_mode; "
            "print('auth on:', get_authentication_mode() == AuthenticationMode.TOKEN); import ray; ray.shutdown()")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    res = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], env=env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Token authentication" not in res.stderr + res.stdout and "RAY_AUTH_MODE" not in res.stderr
    assert res.stdout.strip() == "auth on: True"

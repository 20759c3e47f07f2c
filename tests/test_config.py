"""Config validation: every error names the file, the key, what was expected and what was given."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.config import load_config
from harness.errors import ConfigError

MINIMAL = """
models: [smollm2-135m]
prompt_sets: [tiny]
strategies:
  - {name: greedy}
"""


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_minimal_config_resolves_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert [m.name for m in cfg.models] == ["smollm2-135m"]
    assert cfg.models[0].engine.block_size == 32
    assert [s.label for s in cfg.strategies] == ["greedy"]
    assert cfg.seeds == (0,)
    assert cfg.run_id.startswith("run-")


def test_malformed_yaml_names_file_line_and_fix(tmp_path):
    p = write(tmp_path, "models: [smollm2-135m\nstrategies:\n  - {name: greedy}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "malformed YAML" in msg
    assert ":2:" in msg or ":3:" in msg  # the position of the problem


def test_unknown_top_level_key_suggests_the_right_one(tmp_path):
    p = write(tmp_path, MINIMAL + "strategys: []\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "strategys" in msg and "did you mean 'strategies'" in msg


def test_unknown_engine_key_names_the_nested_key(tmp_path):
    p = write(tmp_path, MINIMAL + "engine: {block_sise: 32}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "engine" in str(e.value) and "block_sise" in str(e.value) and "block_size" in str(e.value)


def test_unknown_strategy_did_you_mean(tmp_path):
    p = write(tmp_path, MINIMAL.replace("greedy", "top_pp"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "strategies[0].name" in msg and "'top_pp'" in msg and "did you mean 'top_p'" in msg


def test_top_p_out_of_range_gives_range_and_value(tmp_path):
    p = write(tmp_path, MINIMAL.replace("{name: greedy}", "{name: top_p, top_p: 1.5}"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "strategies[0]" in msg
    assert "top_p must be in (0, 1], got 1.5" in msg


def test_out_of_range_inside_a_grid_names_the_grid_point(tmp_path):
    p = write(tmp_path, MINIMAL.replace("{name: greedy}", "{name: min_p, min_p: [0.1, 2]}"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "min_p=2" in str(e.value) and "min_p must be in [0, 1], got 2" in str(e.value)


def test_unknown_strategy_parameter(tmp_path):
    p = write(tmp_path, MINIMAL.replace("{name: greedy}", "{name: top_k, topk: 5}"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "'topk'" in str(e.value) and "did you mean 'top_k'" in str(e.value)


def test_wrong_type_names_key_and_value(tmp_path):
    p = write(tmp_path, MINIMAL + "generation: {max_tokens: lots}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "generation.max_tokens" in str(e.value) and "'lots'" in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.yaml")
    assert "not found" in str(e.value) and "nope.yaml" in str(e.value)


def test_non_utf8_config_file(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(MINIMAL.encode() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "not valid UTF-8" in str(e.value) and "line 6" in str(e.value)


def test_grid_expansion_labels_and_ids(tmp_path):
    p = write(tmp_path, MINIMAL.replace("{name: greedy}", "{name: top_p, top_p: [0.8, 0.9, 0.95], temperature: [0.7, 1]}"))
    cfg = load_config(p)
    assert len(cfg.strategies) == 6
    labels = [s.label for s in cfg.strategies]
    assert "top_p(temperature=0.7,top_p=0.8)" in labels
    assert len(set(s.id for s in cfg.strategies)) == 6
    # Same config -> same labels and ids (stable across loads); ints normalise to floats.
    again = load_config(p)
    assert [s.id for s in again.strategies] == [s.id for s in cfg.strategies]
    assert {s.params["temperature"] for s in cfg.strategies} == {0.7, 1.0}


def test_duplicate_strategy_configs_are_rejected(tmp_path):
    p = write(tmp_path, MINIMAL + "  - {name: greedy}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "appears twice" in str(e.value)


def test_config_hash_ignores_output_dir(tmp_path):
    a = load_config(write(tmp_path, MINIMAL + "output: {dir: a}\n", "a.yaml"))
    b = load_config(write(tmp_path, MINIMAL + "output: {dir: b}\n", "b.yaml"))
    c = load_config(write(tmp_path, MINIMAL + "generation: {max_tokens: 5}\n", "c.yaml"))
    assert a.run_id == b.run_id and a.run_id != c.run_id


def test_shipped_configs_validate():
    root = Path(__file__).resolve().parent.parent / "configs"
    for path in sorted(root.glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.strategies, path

"""Config validation: every error names the file, the key, what was expected and what was given."""

from __future__ import annotations

import os
import sys
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
    root = Path(__file__).resolve().parents[2] / "configs"
    for path in sorted(root.glob("*.yaml")):
        if "claims:" in path.read_text():
            from harness.study import load_study_config
            from harness.tune import load_tune_config
            assert load_study_config(path).claims, path
            for load in (load_config, load_tune_config):
                with pytest.raises(ConfigError, match="a study file"):
                    load(path)
            continue
        if "tune:" in path.read_text():
            from harness.tune import load_tune_config
            assert load_tune_config(path)[1].families, path
            with pytest.raises(ConfigError, match="a tune config"):
                load_config(path)
            continue
        cfg = load_config(path)
        assert cfg.strategies, path


# ---- hostile and oversized input: each case below was accepted (or crashed) before -------------


def test_validate_imports_no_module_a_metric_or_strategy_names(tmp_path, capsys, monkeypatch):
    from harness.cli import main
    monkeypatch.delitem(sys.modules, "this", raising=False)  # importing 'this' prints the Zen of Python
    for extra in ('metrics: ["this:s"]\n', 'strategies: [{name: "this:s"}]\n'):
        text = MINIMAL + extra if extra.startswith("metrics") else MINIMAL.replace("strategies:\n  - {name: greedy}\n", extra)
        p = write(tmp_path, text)
        assert main(["validate", str(p)]) == 2
        out, err = capsys.readouterr()
        assert "Beautiful is better than ugly" not in out + err
        assert "'this' is a standard-library module" in err and str(p) in err
        assert "this" not in sys.modules


def test_metric_plugin_is_found_without_import_and_loaded_at_run_time(tmp_path, monkeypatch):
    pkg = tmp_path / "plugs" / "deceval_test_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("import os\nos.environ['DECEVAL_TEST_PLUGIN_IMPORTED'] = '1'\n")
    (pkg / "metrics.py").write_text(
        "from harness.metrics import Metric\n"
        "shout = Metric('shout', lambda row: float(row['completion'].isupper()), True, 'all caps')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugs"))
    monkeypatch.delenv("DECEVAL_TEST_PLUGIN_IMPORTED", raising=False)
    cfg = load_config(write(tmp_path, MINIMAL + 'metrics: ["deceval_test_plugin.metrics:shout"]\n'))
    assert cfg.metrics == ("deceval_test_plugin.metrics:shout",)
    assert "deceval_test_plugin" not in sys.modules and "DECEVAL_TEST_PLUGIN_IMPORTED" not in os.environ
    from harness.config import check_metric_plugins
    from harness.metrics import METRICS, Metric
    check_metric_plugins(cfg)  # what `deceval run` does before it starts
    assert os.environ["DECEVAL_TEST_PLUGIN_IMPORTED"] == "1"
    assert isinstance(METRICS.get("deceval_test_plugin.metrics:shout"), Metric)
    with pytest.raises(ConfigError, match="no module 'deceval_test_plugin.nothing'"):
        load_config(write(tmp_path, MINIMAL + 'metrics: ["deceval_test_plugin.nothing:shout"]\n'))
    monkeypatch.delitem(sys.modules, "deceval_test_plugin", raising=False)
    monkeypatch.delitem(sys.modules, "deceval_test_plugin.metrics", raising=False)


def test_run_refuses_a_plugin_metric_that_is_not_a_metric_before_anything_starts(tmp_path, capsys, monkeypatch):
    import harness.cli.run
    from harness.cli import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("the run started")
    monkeypatch.setattr(harness.cli.run, "run", must_not_run)
    p = write(tmp_path, MINIMAL + 'metrics: ["harness.config:slugify"]\n')
    assert main(["validate", str(p)]) == 0  # validation imports nothing it names
    capsys.readouterr()
    assert main(["run", str(p)]) == 2
    assert "metrics[0]: metric 'harness.config:slugify' names a function, not a harness.metrics.Metric" \
        in capsys.readouterr().err
    p = write(tmp_path, "models: [smollm2-135m]\nprompt_sets: [facts]\nstrategies: [{name: top_p, top_p: 0.9}]\n"
                        "generation: {samples_per_prompt: 1000, seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]}\n")
    assert main(["run", str(p)]) == 2
    assert "the plan has 1,078,000 rows" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="the run started"):  # --force lifts the row limit
        main(["run", str(p), "--force"])


def test_duplicate_yaml_key_names_file_line_and_key(tmp_path):
    p = write(tmp_path, MINIMAL + "generation:\n  max_tokens: 5\n  seed: 1\n  max_tokens: 6\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:9:" in str(e.value) and "duplicate key 'max_tokens'" in str(e.value) and "line 7" in str(e.value)
    p = write(tmp_path, MINIMAL + "models: [gemma3-270m]\n")
    with pytest.raises(ConfigError, match="duplicate key 'models'"):
        load_config(p)


def test_merge_keys_may_override_what_they_merge(tmp_path):
    text = MINIMAL.replace("models: [smollm2-135m]", "engine: &e {block_size: 32, kv_cache_gib: 1}\n"
                           "models: [{model: smollm2-135m, engine: {<<: *e, kv_cache_gib: 3}}]")
    cfg = load_config(write(tmp_path, text))
    assert cfg.models[0].engine.kv_cache_gib == 3 and cfg.models[0].engine.block_size == 32


def test_alias_bomb_is_rejected_quickly_with_a_short_message(tmp_path):
    import time
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    p = write(tmp_path, MINIMAL + "\n".join(lines) + "\nrun_name: *a8\n")
    assert p.stat().st_size < 600
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert time.perf_counter() - t0 < 2.0
    assert "expands to more than 100,000 values" in str(e.value) and len(str(e.value)) < 300


def test_recursive_alias_and_deep_nesting_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="recursive structure"):
        load_config(write(tmp_path, MINIMAL + "description: &d [*d]\n"))
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        load_config(write(tmp_path, MINIMAL + "description: " + "[" * 500 + "]" * 500 + "\n"))


@pytest.mark.parametrize("extra,key", [
    ("strategies:\n  - {name: temperature, temperature: .inf}\n", "strategies[0].temperature"),
    ("engine: {gpu_memory_utilization: .nan}\n", "engine.gpu_memory_utilization"),
    ("generation: {max_tokens: .inf}\n", "generation.max_tokens"),
    ("regression: {gates: {exact_match: {tolerance: .inf}}}\n", "regression.gates.exact_match.tolerance"),
])
def test_inf_and_nan_are_not_numbers(tmp_path, extra, key):
    base = MINIMAL.replace("strategies:\n  - {name: greedy}\n", "") if extra.startswith("strategies") else MINIMAL
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, base + extra))
    assert f"{key}: expected a finite number" in str(e.value)


@pytest.mark.parametrize("extra,key,got", [
    ("generation: {max_tokens: true}\n", "generation.max_tokens", "got True"),
    ("generation: {max_tokens: '3'}\n", "generation.max_tokens", "got '3'"),
    ("engine: {gpu_memory_utilization: '0.5'}\n", "engine.gpu_memory_utilization", "got '0.5'"),
    ("shard_size: 2.0\n", "shard_size", "got 2.0"),
])
def test_no_bool_or_string_where_a_number_is_expected(tmp_path, extra, key, got):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, MINIMAL + extra))
    assert f"{key}: Input should be a valid" in str(e.value) and got in str(e.value)
    with pytest.raises(ConfigError, match=r"models\[0\]\.replicas: Input should be a valid integer, got True"):
        load_config(write(tmp_path, MINIMAL.replace("[smollm2-135m]", "[{model: smollm2-135m, replicas: yes}]")))


@pytest.mark.parametrize("edit,message", [
    ({"generation": {"samples_per_prompt": 1_000_000_000}}, "generation.samples_per_prompt: must be in [1, 1000], got 1000000000"),
    ({"prompt_sets": [{"name": "facts", "limit": 10**7}]}, "prompt_sets[0].limit: must be in [1, 1000000], got 10000000"),
    ({"shard_size": 10**6}, "shard_size: must be in [1, 100000], got 1000000"),
    ({"models": [{"model": "smollm2-135m", "replicas": 1000}]}, "models[0].replicas: must be in [1, 256], got 1000"),
    ({"strategies": [{"name": "greedy", "samples_per_prompt": 5000}]},
     "strategies[0].samples_per_prompt: expected an integer in [1, 1000], got 5000"),
    ({"generation": {"max_tokens": 4096}},
     "generation.max_tokens: must be in [1, 2048] (the engine's max_model_len of model 'smollm2-135m'), got 4096"),
    ({"strategies": [{"name": "greedy", "max_tokens": 600}], "engine": {"max_model_len": 512}},
     "strategies[0].max_tokens: must be in [1, 512]"),
    ({"models": ["smollm2-135m", {"model": "gemma3-270m", "engine": {"max_model_len": 128}}],
      "generation": {"max_tokens": 200}},
     "generation.max_tokens: must be in [1, 128] (the engine's max_model_len of model 'gemma3-270m'), got 200"),
])
def test_sizes_out_of_range_name_key_range_and_value(edit, message):
    from harness.config import resolve_config
    raw = {"models": ["smollm2-135m"], "prompt_sets": ["tiny"], "strategies": [{"name": "greedy"}], **edit}
    with pytest.raises(ConfigError) as e:
        resolve_config(raw, "t.yaml")
    assert f"t.yaml: {message}" in str(e.value)


def test_strategy_grid_is_capped_before_it_expands():
    from harness.config import resolve_config
    grid = {"name": "top_p", "top_p": [0.5 + i / 1000 for i in range(200)], "temperature": [0.1 * i for i in range(1, 101)]}
    with pytest.raises(ConfigError) as e:
        resolve_config({"models": ["smollm2-135m"], "prompt_sets": ["tiny"], "strategies": [grid]}, "t.yaml")
    assert "strategies[0]: the grid expands to 20,000 strategy configs (200 x 100)" in str(e.value)


def test_planned_rows_cap_is_lifted_by_force(tmp_path, capsys):
    from harness.cli import main
    grid = "[" + ", ".join(str(0.5 + i / 100) for i in range(20)) + "]"
    p = write(tmp_path, f"models: [smollm2-135m]\nprompt_sets: [facts]\nstrategies:\n  - {{name: top_p, top_p: {grid}}}\n"
                        "generation: {samples_per_prompt: 1000}\n")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "the plan has 1,540,000 rows (77 prompts x 20 strategy config(s)" in err
    assert "more than the 1,000,000 allowed without --force" in err and "pass --force" in err
    assert main(["validate", str(p), "--force"]) == 0
    assert "rows: 1540000" in capsys.readouterr().out
    args = __import__("harness.cli", fromlist=["build_parser"]).build_parser().parse_args(["run", str(p), "--force"])
    assert args.force is True


def test_planned_rows_match_the_plan():
    from harness.config import planned_rows
    from harness.plan import make_plan
    from harness.tasks import load_prompt_set
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")
    sets = [load_prompt_set(p) for p in cfg.prompt_sets]
    units = make_plan(cfg, sets)
    assert planned_rows(cfg, sum(len(s.prompts) for s in sets)) == sum(u.expected_rows for u in units) == 364


def test_errors_quote_only_an_excerpt_of_a_huge_value(tmp_path):
    huge = "y" * 100_000
    for text in (MINIMAL + f"generation: {{max_tokens: {huge}}}\n",
                 MINIMAL.replace("{name: greedy}", f"{{name: top_p, top_p: {huge}}}"),
                 MINIMAL.replace("{name: greedy}", f"{{name: {huge}}}"),
                 MINIMAL + f"metrics: [{huge}]\n",
                 MINIMAL + f"? {huge}\n: 1\n"):
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, text))
        assert len(str(e.value)) < 1000 and "yyy..." in str(e.value), str(e.value)[:300]


def test_an_error_lists_at_most_ten_problems(tmp_path):
    bad = "[" + ", ".join(["{model: 1}"] * 50) + "]"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, MINIMAL.replace("[smollm2-135m]", bad)))
    lines = str(e.value).splitlines()
    assert len(lines) == 11 and "and more problems" in lines[-1]


@pytest.mark.parametrize("extra,message", [
    ("1: 2\n", "keys must be text, got the key 1 (int)"),
    ("description: " + "9" * 5000 + "\n", "cannot read the value"),
    ("description: !!timestamp 2020-13-45\n", "cannot read the value '2020-13-45'"),
    ("description: !!python/object/apply:os.system ['echo hi']\n", "malformed YAML: could not determine a constructor"),
])
def test_values_yaml_can_hold_but_a_config_cannot(tmp_path, extra, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, MINIMAL + extra))
    assert message in str(e.value)


def test_config_file_too_large_or_unreadable_name(tmp_path):
    p = write(tmp_path, MINIMAL + "# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="more than the 1,048,576 allowed"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path / ("n" * 300 + ".yaml"))
    from harness.config import resolve_config
    cfg = resolve_config({"models": ["a/b\x00c"], "prompt_sets": ["tiny"], "strategies": [{"name": "greedy"}]}, "t")
    assert cfg.models[0].name == "a_b_c"

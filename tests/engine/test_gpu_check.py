"""bench/gpu_check.py's plumbing on the CPU with the real engine (its V1 way; V2 needs
Triton and a GPU): the plan runs through the worker, each strategy reports the runner and
decode path its rows say, tokens/s, and agreement with the reference way."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_auto_ways_on_a_machine_without_cuda_are_v1_only_and_agreement_is_counted_per_sample():
    gc = _module()
    assert gc.default_ways() == ["v1"]
    a = {"strategies": {"greedy": {"tokens": [[1, 2, 3], [4, 5]], "tok_per_s": 10.0, "decode_path": ["native"],
                                   "model_runner": ["v1"]}}}
    b = {"strategies": {"greedy": {"tokens": [[1, 2, 9], [4, 5]], "tok_per_s": 20.0, "decode_path": ["native"],
                                   "model_runner": ["v2"]}}}
    got = gc.compare({"v1": a, "v2": b, "v2-off": {"error": "engine did not start"}})
    assert got["reference"] == "v1" and "v2-off" not in got
    assert got["v1"]["greedy"]["same_completion"] == 1.0
    assert got["v2"]["greedy"]["same_completion"] == 0.5
    assert got["v2"]["greedy"]["leading_token_agreement"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-4)


@pytest.mark.engine
def test_the_plan_on_the_shared_engine_reports_runner_path_and_speed(engine):
    gc = _module()
    res = gc.run_way(engine, gc.load_prompts(2), max_tokens=4)
    assert res["model_runner"] == "v1"
    paths = {label: (s["model_runner"], s["decode_path"], s["errors"]) for label, s in res["strategies"].items()}
    assert paths == {"greedy": (["v1"], ["native"], []), "typical": (["v1"], ["processor"], []),
                     "mirostat": (["v1"], ["processor"], []), "wsp_k4": (["v1"], ["processor"], []),
                     "beam4_tail": (["v1"], ["stepwise"], [])}
    assert all(s["generated_tokens"] > 0 and s["tok_per_s"] > 0 for s in res["strategies"].values())
    same = gc.compare({"v1": res, "again": res})["again"]
    assert all(a["same_completion"] == 1.0 for a in same.values())


@pytest.mark.engine
def test_the_script_runs_the_v1_way_in_its_own_process_and_writes_the_json(tmp_path):
    out = tmp_path / "check.json"
    subprocess.run([sys.executable, str(SCRIPT), "--ways", "v1", "--prompts", "2", "--max-tokens", "3",
                    "--out", str(out)], cwd=str(ROOT), check=True, timeout=900)
    report = json.loads(out.read_text())
    v1 = report["ways"]["v1"]
    assert "error" not in v1 and v1["model_runner"] == "v1" and v1["env"] == {"VLLM_USE_V2_MODEL_RUNNER": "0"}
    assert report["agreement"]["reference"] == "v1"
    assert {k: a["same_completion"] for k, a in report["agreement"]["v1"].items()} == {
        "greedy": 1.0, "typical": 1.0, "mirostat": 1.0, "wsp_k4": 1.0, "beam4_tail": 1.0}
    assert report["cpu"]

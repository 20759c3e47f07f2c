"""Which vLLM model runner and which decode path made a row: the engine reads the runner
from vLLM's own configuration and registers that runner's logits processors; every row
carries ``model_runner`` and ``decode_path``; a slower fallback is logged and shown by the
doctor."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest

from harness.cli.doctor import check_decode_paths, run_doctor
from harness.engine.engine import DECODE_PATHS, log_decode_paths, processors_enabled
from harness.engine.vllm_ext import PROCESSORS
from harness.engine.worker import decode_path, execute_unit
from harness.tasks import Prompt
from strategies import get_strategy
from tests.engine.test_worker import make_unit


def _engine(nucleus: bool, samplers: bool):
    return SimpleNamespace(nucleus_in_engine=nucleus, samplers_in_engine=samplers, model_runner="v2")


@pytest.mark.parametrize("name,params,with_procs,without", [
    ("greedy", {}, "native", "native"),
    ("top_p", {"top_p": 0.9}, "native", "native"),
    ("typical", {"typical_p": 0.9}, "processor", "stepwise"),
    ("mirostat", {}, "processor", "stepwise"),
    ("typical", {"typical_p": 0.9, "impl": "stepwise"}, "stepwise", "stepwise"),
    ("wsp", {"max_candidates": 4}, "processor", "flat_logprobs"),
    ("beam", {"width": 2}, "stepwise", "stepwise"),
])
def test_decode_path_of_each_kind_of_strategy_with_and_without_the_processors(name, params, with_procs, without):
    strategy = get_strategy(name).from_dict(params)
    assert decode_path(_engine(True, True), strategy) == with_procs
    assert decode_path(_engine(False, False), strategy) == without


def test_processors_off_is_a_warning_naming_every_slower_path(monkeypatch, caplog):
    monkeypatch.setenv("DECEVAL_NUCLEUS_PROCESSOR", "0")
    assert not processors_enabled()
    with caplog.at_level(logging.WARNING, logger="harness.engine.engine"):
        log_decode_paths("v2", processors_enabled(), "cuda")
    msg = caplog.records[-1].getMessage()
    assert caplog.records[-1].levelno == logging.WARNING and "model runner v2" in msg
    assert "decode_path" not in msg and "samplers" in msg and ": stepwise (" in msg and ": flat_logprobs (" in msg
    found = check_decode_paths({"has_triton": True}, "cuda")
    assert found[0].level == "warn" and "turned off" in found[0].text and found[0].fix
    assert [f.text.split(":")[0] for f in found[1:]] == [w for w, _, _, cost in DECODE_PATHS if cost]
    monkeypatch.delenv("DECEVAL_NUCLEUS_PROCESSOR")
    assert processors_enabled()


def test_doctor_names_the_runner_it_expects(monkeypatch):
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    monkeypatch.delenv("DECEVAL_NUCLEUS_PROCESSOR", raising=False)
    assert "model runner v1 expected (no Triton" in check_decode_paths({"has_triton": False}, "cuda")[0].text
    cuda = check_decode_paths({"has_triton": True}, "cuda")
    assert "model runner v2 expected (CUDA default); logits processors: the v2 pair" in cuda[0].text
    assert "bench/gpu_check.py" in cuda[1].text
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
    assert "model runner v1 expected (VLLM_USE_V2_MODEL_RUNNER=0)" in check_decode_paths({"has_triton": True},
                                                                                          "cuda")[0].text
    out = io.StringIO()
    run_doctor(out=out, checks=lambda: {"torch": "2.13.0+cpu", "vllm": "0.32.0", "has_triton": False,
                                        "cuda_devices": []})
    assert "  runner " in out.getvalue() and "model runner v1 expected" in out.getvalue()


# ---- on the real engine -----------------------------------------------------------------------


@pytest.mark.engine
def test_the_cpu_engine_runs_v1_with_the_v1_processors_and_every_row_says_so(engine):
    assert engine.model_runner == "v1"  # what vLLM's config says, checked against the built engine
    assert engine.llm.llm_engine.vllm_config.use_v2_model_runner is False
    assert tuple(engine.llm.llm_engine.model_config.logits_processors) == PROCESSORS["v1"]
    info = engine.info()
    assert info["model_runner"] == "v1" and info["logits_processors"] == list(PROCESSORS["v1"])
    assert engine.nucleus_in_engine and engine.samplers_in_engine
    prompts = [Prompt(id="a", set="t", text="The capital of France is"), Prompt(id="b", set="t", text="One, two,")]
    for name, params, path in [("greedy", {}, "native"), ("typical", {"typical_p": 0.9}, "processor"),
                               ("wsp", {"max_candidates": 4}, "processor"), ("beam", {"width": 2}, "stepwise")]:
        rows = execute_unit(engine, make_unit(name, params, prompts, max_tokens=3)).rows
        assert [(r["model_runner"], r["decode_path"], r["error"]) for r in rows] == [("v1", path, None)] * 2, name


@pytest.mark.engine
def test_a_run_through_ray_records_the_runner_in_run_json_and_in_every_row(small_report):
    import json

    from harness.report import read_samples
    _cfg, outcome, _ = small_report
    resolved = json.loads((outcome.run_dir / "run.json").read_text())["models"]["smollm2-135m"]["resolved"]
    assert resolved["model_runner"] == "v1" and resolved["logits_processors"] == list(PROCESSORS["v1"])
    df = read_samples(outcome.run_dir)
    assert set(df["model_runner"]) == {"v1"} and set(df["decode_path"]) == {"native"}  # the quickstart is native

"""Shared fixtures. A real engine is expensive (30-50 s to start, and generation on a CPU
without AVX-512 is several times slower), so the session starts as few as it can:

- ``engine``: ONE in-process float32 engine for every engine test module (float32 because
  the exactness tests need it on both sides, and because it is the fast dtype on CPUs
  without native bf16);
- engines of the tests run vLLM's engine core in their own process
  (``engine_core_process: false``): one process start fewer each (bench/engine_layout.py),
  except where a test is about vLLM's own layout;
- ``ray_local``: one embedded Ray for every test that runs units through actors;
- ``small_report``: one real report (a quickstart-sized run through Ray), read by the run,
  leaderboard and summary tests alike;
- ``s3_server``: one real S3 server for the session (moto's server mode in a child process,
  tests/fakes/s3_server.py), with ``s3_env`` (the AWS variables that point ``s3://`` URIs
  at it, for one test and the processes it starts) and ``s3_bucket`` (a fresh bucket per
  test, as ``s3://<name>``). Any test that needs object storage uses these three.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from harness.models import prepare
    return str(prepare("smollm2-135m"))


@pytest.fixture(scope="session")
def engine(smollm2_path):
    """The shared float32 SmolLM2 engine, in this process (no Ray), bound to every core."""
    from harness.driver.placement import core_share
    from harness.engine.engine import Engine
    eng = Engine(smollm2_path, {"dtype": "float32", "max_model_len": 1024, "kv_cache_gib": 1, "seed": 0,
                                "block_size": 32, "enable_prefix_caching": True, "engine_core_process": False},
                 cpu_cores=core_share(0, 1))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def ray_local():
    """An embedded local Ray for the session (the runner reuses a started Ray)."""
    import ray

    from harness.driver.placement import start_ray
    start_ray(None, verbose=False)
    yield ray
    ray.shutdown()


def quickstart_sized(out_dir) -> dict:
    """The quickstart's shape, small: every native strategy, a grid, several samples, and
    greedy once more at the end (the cost rule: the same work costs the same wherever it
    sits in the plan), each unit timed twice."""
    return {
        "run_name": "qs-test",
        "models": ["smollm2-135m"],
        "engine": {"max_model_len": 1024, "kv_cache_gib": 1, "engine_core_process": False},
        "prompt_sets": [{"name": "tiny"}, {"name": "facts", "limit": 4}],
        "chat": True,
        "strategies": [{"name": "greedy"}, {"name": "temperature", "temperature": 0.7},
                       {"name": "top_k", "top_k": 40}, {"name": "top_p", "top_p": [0.9, 0.95]},
                       {"name": "min_p", "min_p": 0.1, "samples_per_prompt": 3},
                       {"name": "greedy", "label": "greedy-again"}],
        "generation": {"max_tokens": 16, "samples_per_prompt": 2, "seed": 0, "timing_repeats": 2},
        "output": {"dir": str(out_dir)},
    }


@pytest.fixture(scope="session")
def small_report(tmp_path_factory, ray_local):
    """One real run of :func:`quickstart_sized` through Ray: (config, outcome, printed text)."""
    import io

    from harness.config import resolve_config
    from harness.driver.runner import run
    cfg = resolve_config(quickstart_sized(tmp_path_factory.mktemp("small-report")), "test-config")
    out = io.StringIO()
    outcome = run(cfg, out=out, progress=False)
    return cfg, outcome, out.getvalue()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (moto, loopback, a child process) for the whole session: an
    :class:`tests.fakes.s3_server.S3Server` with ``endpoint``, ``env``, ``secret_key``,
    ``filesystem()`` and ``create_bucket()``."""
    from tests.fakes.s3_server import start_s3_server, stop_s3_server
    server = start_s3_server()
    yield server
    stop_s3_server(server)


@pytest.fixture()
def s3_env(s3_server, monkeypatch):
    """The standard AWS variables (endpoint, key pair, region) of ``s3_server`` exported for
    this test, so ``s3://`` URIs reach it as they would reach real S3; returns the server."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture()
def s3_bucket(s3_env) -> str:
    """A fresh, empty bucket on ``s3_server`` (with ``s3_env`` set): ``s3://<name>``."""
    return s3_env.create_bucket()

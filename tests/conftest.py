"""Shared fixtures. The real engine is expensive (~30 s to start): one per test session."""

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
    """The shared bf16 SmolLM2 engine, in this process (no Ray), bound to every core."""
    from harness.engine import Engine, core_share
    eng = Engine(smollm2_path, {"dtype": "bfloat16", "max_model_len": 1024, "kv_cache_gib": 2, "seed": 0},
                 cpu_cores=core_share(0, 1))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def ray_local():
    """An embedded local Ray for the session."""
    import ray
    from harness.runner import start_ray
    start_ray(None, verbose=False)
    yield ray
    ray.shutdown()

"""Simulated engine actors for the scheduler and fault tests: they sleep for
a modelled unit time instead of running a model, and can be told to fail."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ray


@dataclass(frozen=True)
class SimUnit:
    id: str
    model: str
    seconds: float = 0.05
    # "ok" | "die_once" (the actor process exits on the first attempt) | "raise" (always
    # raises) | "engine_dead_once" (raises an EngineDeadError on the first attempt) |
    # "hang_once" (never returns on the first attempt)
    mode: str = "ok"
    marker_dir: str | None = None
    expected_rows: int = 1


class EngineDeadError(RuntimeError):
    """Stands in for vllm.v1.engine.exceptions.EngineDeadError (matched by name)."""


@ray.remote(num_cpus=0)
class SimActor:
    def __init__(self, model: str, name: str) -> None:
        self.model = model
        self.name = name
        self._lock = threading.Lock()
        self._active = 0
        self._peak = 0

    def ping(self) -> int:
        return os.getpid()

    def peak(self) -> int:
        return self._peak

    def _first_attempt(self, unit: SimUnit) -> bool:
        marker = Path(unit.marker_dir) / unit.id
        try:
            marker.touch(exist_ok=False)
            return True
        except FileExistsError:
            return False

    def run_unit(self, unit: SimUnit) -> dict:
        if unit.model != self.model:
            raise AssertionError(f"affinity broken: unit for {unit.model} on a {self.model} actor")
        with self._lock:
            self._active += 1
            self._peak = max(self._peak, self._active)
        start = time.time()
        try:
            time.sleep(unit.seconds)
            if unit.mode == "die_once" and self._first_attempt(unit):
                os._exit(1)
            if unit.mode == "hang_once" and self._first_attempt(unit):
                time.sleep(3600)
            if unit.mode == "raise":
                raise ValueError(f"unit {unit.id} is bad")
            if unit.mode == "engine_dead_once" and self._first_attempt(unit):
                raise EngineDeadError("EngineCore encountered an issue")
        finally:
            with self._lock:
                self._active -= 1
        return {"unit": unit.id, "model": self.model, "actor": self.name, "pid": os.getpid(),
                "start": start, "end": time.time()}


def make_pools(models: dict[str, int], *, max_restarts: int = 2, max_concurrency: int = 1) -> dict[str, list]:
    pools = {m: [SimActor.options(max_restarts=max_restarts, max_task_retries=0, max_concurrency=max_concurrency)
                 .remote(m, f"{m}-{i}") for i in range(n)] for m, n in models.items()}
    ray.get([a.ping.remote() for actors in pools.values() for a in actors])  # started and warm
    return pools

"""The thin Ray shell around :class:`harness.engine.Engine`: one actor per model replica,
keeping its model loaded across units.

A unit runs on a worker thread while the actor's method watches the engine: when vLLM's
engine-core process dies (killed, out of memory) the method raises ``EngineDeadError``
within ``WATCH_S`` seconds instead of waiting on a ``generate`` that may never return, and
the scheduler restarts the actor and retries the unit.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import ray

from harness.plan import WorkUnit
from harness.worker import UnitResult, execute_unit


WATCH_S = 0.5


@ray.remote
class EngineActor:
    def __init__(self, model_path: str, options: dict[str, Any], cpu_cores: str | None, needs_bos: bool) -> None:
        from harness.engine import Engine
        self.engine = Engine(model_path, options, cpu_cores=cpu_cores, needs_bos=needs_bos)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="unit")  # runs one unit at a time

    def info(self) -> dict[str, Any]:
        return self.engine.info()

    def run_unit(self, unit: WorkUnit) -> UnitResult:
        future = self._worker.submit(execute_unit, self.engine, unit)
        while True:
            try:
                result = future.result(timeout=WATCH_S)
                break
            except concurrent.futures.TimeoutError:
                if self.engine.engine_dead():
                    from vllm.v1.engine.exceptions import EngineDeadError
                    raise EngineDeadError(f"the vLLM engine-core process of this actor died while running unit "
                                          f"{unit.id}") from None
        info = self.engine.info()
        result.engine_info = {k: info[k] for k in ("pid", "cpu_cores", "model_path", "dtype", "dtype_requested", "cpu")}
        return result

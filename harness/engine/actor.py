"""The actor around :class:`harness.engine.engine.Engine`: one per model replica, keeping
its model loaded across units. A plain class: the driver makes it a Ray actor class
(``ray.remote``, :func:`harness.driver.placement.actor_class`), so this package needs no Ray.

A unit runs on a worker thread while the actor's method watches the engine: when a vLLM
process of the engine dies (its model worker, or its engine core where vLLM runs one in a
process of its own; killed, out of memory) the method raises ``EngineDeadError`` within
``WATCH_S`` seconds instead of waiting on a ``generate`` that may never return, and the
scheduler restarts the actor and retries the unit.

Every unit and every row records the Ray node its actor ran on (``node_id``), looked up
once (None outside Ray, in tests that call the class directly).
"""

from __future__ import annotations

import concurrent.futures
import functools
import sys
from typing import Any

from harness.engine.engine import Engine
from harness.engine.worker import UnitResult, execute_unit
from harness.plan import WorkUnit

WATCH_S = 0.5
#: What a unit records of the engine that made it (its file's metadata): who, where, in which
#: dtype, and the engine's own costs so far (start, warm-up), which are never the unit's.
ENGINE_INFO_KEYS = ("node_id", "pid", "cpu_cores", "model_path", "dtype", "dtype_requested", "cpu", "load_seconds",
                    "warmup_seconds", "warmups", "cache_resets", "model_runner", "logits_processors")


class EngineActor:
    def __init__(self, model_path: str, options: dict[str, Any], cpu_cores: str | None, needs_bos: bool) -> None:
        self.engine = Engine(model_path, options, cpu_cores=cpu_cores, needs_bos=needs_bos)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="unit")  # runs one unit at a time

    @functools.cached_property
    def node_id(self) -> str | None:
        """The Ray node this actor runs on: recorded in every row and unit."""
        return ray_node_id()

    @staticmethod
    def _engine_dead(unit: WorkUnit) -> Exception:
        from vllm.v1.engine.exceptions import EngineDeadError
        return EngineDeadError(f"a vLLM process of this actor's engine died while running unit {unit.id}")

    def info(self) -> dict[str, Any]:
        return dict(self.engine.info(), node_id=self.node_id)

    def run_unit(self, unit: WorkUnit) -> UnitResult:
        future = self._worker.submit(execute_unit, self.engine, unit)
        while not future.done():
            concurrent.futures.wait([future], timeout=WATCH_S)
            if not future.done() and self.engine.engine_dead():
                raise self._engine_dead(unit)
        try:
            result = future.result()
        except Exception as exc:
            if self.engine.engine_dead():  # the unit failed because the engine went away
                raise self._engine_dead(unit) from exc
            raise
        if self.engine.engine_dead():  # rows made while the engine died are not the unit's rows
            raise self._engine_dead(unit)
        info = self.info()
        result.engine_info = {k: info.get(k) for k in ENGINE_INFO_KEYS}
        for row in result.rows:
            row["node_id"] = self.node_id
        return result


def ray_node_id() -> str | None:
    """The id of the Ray node this process runs on; None when it is not a Ray worker."""
    if "ray" not in sys.modules:  # not in a Ray worker: never import Ray just to ask
        return None
    import ray
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None

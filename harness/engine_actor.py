"""The thin Ray shell around :class:`harness.engine.Engine`: one actor per model replica,
keeping its model loaded across units."""

from __future__ import annotations

from typing import Any

import ray

from harness.plan import WorkUnit
from harness.worker import UnitResult, execute_unit


@ray.remote
class EngineActor:
    def __init__(self, model_path: str, options: dict[str, Any], cpu_cores: str | None, needs_bos: bool) -> None:
        from harness.engine import Engine
        self.engine = Engine(model_path, options, cpu_cores=cpu_cores, needs_bos=needs_bos)

    def info(self) -> dict[str, Any]:
        return self.engine.info()

    def run_unit(self, unit: WorkUnit) -> UnitResult:
        result = execute_unit(self.engine, unit)
        result.engine_info = {"pid": self.engine.info()["pid"], "cpu_cores": self.engine.cpu_cores,
                              "model_path": self.engine.model_path}
        return result

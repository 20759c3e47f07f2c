"""The runner with its engines replaced: a scheduler that makes each unit's rows the way the
worker makes them, with completions a test scripts, so a test can follow rows from a config
to Parquet without Ray or an engine."""

from __future__ import annotations

from typing import Any, Callable

from harness.driver import runner
from harness.engine.worker import UnitResult
from harness.rows import new_row

#: (unit, prompt) -> the completion the stand-in engine "generates"
Script = Callable[[Any, Any], str]


class NoKept:
    """Stands in for runner.KEPT: no engine to keep between runs."""

    def keep(self, actors) -> None:
        pass

    def release(self) -> None:
        pass


def scripted_scheduler(script: Script, completion_tokens: int) -> type:
    """A Scheduler class whose units answer every prompt (one sample each) with ``script``."""

    class ScriptedScheduler:
        def __init__(self, pools, **kwargs) -> None:
            pass

        def run(self, units, on_done, on_failed, on_retry=None):
            for unit in units:
                rows = []
                for p in unit.prompts:
                    r = new_row(unit, p, 0, unit.seed)
                    r.update(completion=script(unit, p), completion_tokens=completion_tokens, prompt_tokens=9,
                             finish_reason="stop", latency_s=0.01, unit_seconds=0.02)
                    rows.append(r)
                on_done(unit, UnitResult(unit.id, rows, 0.02, completion_tokens * len(rows), {"pid": 0}))
            return {}

    return ScriptedScheduler


def use_scripted_runner(monkeypatch, script: Script, completion_tokens: int) -> None:
    """Patch the runner so ``runner.run`` starts no Ray and no engine and uses ``script``."""
    monkeypatch.setattr(runner, "start_ray", lambda *a, **k: None)
    monkeypatch.setattr(runner, "start_pools", lambda *a, **k: ({}, {}))
    monkeypatch.setattr(runner, "KEPT", NoKept())
    monkeypatch.setattr(runner, "Scheduler", scripted_scheduler(script, completion_tokens))

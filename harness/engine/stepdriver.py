"""The step driver: runs a stepwise strategy over one work unit, in the engine's process
(inside the Ray actor, so no per-step RPC).

The strategy's ``decode`` does the token loop over the :class:`strategies.base.StepEngine`
interface (``Engine.next_token``): every live sequence and candidate of the unit goes into
one batched engine call per token step, as token-id prompts with prefix caching, and
nothing is detokenized until the end. This module builds the unit's
:class:`strategies.base.Stops` (EOS ids, stop strings, ``max_tokens``), detokenizes the
finished samples once, and fills each row from its :class:`strategies.base.Decoded` with
the columns the strategy declares (:func:`harness.rows.fill_decoded`).

Strategies that run a whole unit themselves (beam search through vLLM's
``LLM.beam_search``) define ``run_unit(engine, todo, stops)`` and are handed the unit.
"""

from __future__ import annotations

import time
from typing import Any

from harness.rows import fill_decoded
from strategies.base import Stops, StepwiseStrategy

Todo = list[tuple[dict[str, Any], list[int]]]


def unit_stops(engine: Any, unit: Any) -> Stops:
    """The unit's stop conditions on this engine."""
    return Stops(max_tokens=unit.strategy.max_tokens, token_ids=frozenset(engine.eos_token_ids),
                 strings=tuple(getattr(unit, "stop", ()) or ()), decode=engine.decode)


def run_stepwise(engine: Any, unit: Any, strategy: StepwiseStrategy, todo: Todo) -> None:
    """Decode every (row, prompt ids) of ``todo`` with ``strategy`` and fill the rows."""
    if not todo:
        return
    stops = unit_stops(engine, unit)
    if hasattr(strategy, "run_unit"):
        strategy.run_unit(engine, todo, stops)
        return
    t0 = time.perf_counter()
    try:
        decoded = strategy.decode(engine, [ids for _, ids in todo], seeds=[row["seed"] for row, _ in todo],
                                  stops=stops)
    except Exception as exc:  # noqa: BLE001 - a failed unit becomes error rows, not a dead actor
        msg = f"stepwise strategy {strategy.name!r} failed: {type(exc).__name__}: {exc}"
        for row, _ in todo:
            row["error"] = msg
        return
    for (row, _), dec in zip(todo, decoded):
        text = engine.decode(dec.token_ids)
        if dec.finish_reason == "stop":
            text = stops.cut(text)
        fill_decoded(row, dec, text, strategy.sample_columns)
        if row.get("latency_s") is None:
            row["latency_s"] = time.perf_counter() - t0

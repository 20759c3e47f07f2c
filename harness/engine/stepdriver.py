"""The step driver: runs a stepwise strategy over one work unit, in the engine's process
(inside the Ray actor, so no per-step RPC).

The strategy's ``decode`` does the token loop over the :class:`strategies.base.StepEngine`
interface (``Engine.next_token``): every live sequence and candidate of the unit goes into
one batched engine call per token step, as token-id prompts with prefix caching, and
nothing is detokenized until the end. This module builds the unit's
:class:`strategies.base.Stops` (EOS ids, stop strings, ``max_tokens``), detokenizes the
finished samples once, and fills each row from its :class:`strategies.base.Decoded` with
the columns the strategy declares (:func:`harness.rows.fill_decoded`).

A unit whose sequences do not fit the engine's KV cache together (long prompts, many of
them) is decoded in waves of consecutive prompts that do (:func:`waves`): all at once, each
step's batch would evict the prefixes the next step needs, and every step would prefill every
prompt again. A prompt's seed and its tokens do not depend on its wave.

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


#: Share of the KV cache one wave's sequences may fill; the rest takes block rounding.
WAVE_FILL = 0.8
#: Tokens a lookahead request holds beyond its sequence's prefix: its own partial last block.
CANDIDATE_TOKENS = 16


def waves(lengths: list[int], max_tokens: int, width: int, capacity: int | None) -> list[tuple[int, int]]:
    """Consecutive [start, end) slices of a unit's prompts (``lengths`` in tokens) whose
    sequences, grown by ``max_tokens`` and ``width`` lookahead requests each, fit together in
    ``WAVE_FILL`` of a KV cache of ``capacity`` tokens. One slice when they all fit or the
    capacity is unknown; a prompt too long to share the cache gets a wave of its own."""
    if not capacity or not lengths:
        return [(0, len(lengths))]
    budget = capacity * WAVE_FILL
    out, start, used = [], 0, 0.0
    for i, n in enumerate(lengths):
        need = n + max_tokens + width * CANDIDATE_TOKENS
        if i > start and used + need > budget:
            out.append((start, i))
            start, used = i, 0.0
        used += need
    out.append((start, len(lengths)))
    return out


def run_stepwise(engine: Any, unit: Any, strategy: StepwiseStrategy, todo: Todo) -> None:
    """Decode every (row, prompt ids) of ``todo`` with ``strategy``, wave by wave, and fill
    the rows; a wave whose decode fails becomes error rows."""
    if not todo:
        return
    stops = unit_stops(engine, unit)
    if hasattr(strategy, "run_unit"):
        strategy.run_unit(engine, todo, stops)
        return
    t0 = time.perf_counter()  # every row's latency counts from the unit's start, as a queued request's would
    capacity = getattr(engine, "kv_capacity_tokens", None)
    width = getattr(strategy, "lookahead_width", 1)  # a plugin written before it asks for 1
    for a, b in waves([len(ids) for _, ids in todo], stops.max_tokens, width, capacity):
        _decode_wave(engine, strategy, todo[a:b], stops, t0)


def _decode_wave(engine: Any, strategy: StepwiseStrategy, todo: Todo, stops: Stops, t0: float) -> None:
    try:
        decoded = strategy.decode(engine, [ids for _, ids in todo], seeds=[row["seed"] for row, _ in todo],
                                  stops=stops)
    except Exception as exc:  # noqa: BLE001 - a failed wave becomes error rows, not a dead actor
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

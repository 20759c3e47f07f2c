"""Runs one work unit on an engine and returns its rows. Plain Python: the Ray actor
calls it in the engine's process, and tests call it directly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from harness.engine.stepdriver import run_stepwise
from harness.metrics import score_on_engine
from harness.plan import WorkUnit
from harness.prompts import Prompt
from harness.rows import new_row
from harness.seeding import sample_seed


@dataclass
class UnitResult:
    unit_id: str
    rows: list[dict[str, Any]]
    gen_seconds: float
    generated_tokens: int
    engine_info: dict[str, Any] = field(default_factory=dict)


def prepare_prompts(engine: Any, unit: WorkUnit) -> list[tuple[Prompt, list[int] | None, str | None]]:
    """Token ids for each prompt, or the reason it cannot run (it becomes an error row)."""
    max_len = engine.options.max_model_len
    out = []
    for p in unit.prompts:
        if p.error:
            out.append((p, None, p.error))
            continue
        try:
            ids = engine.encode(p.text, p.chat)
        except Exception as exc:  # noqa: BLE001 - a tokenizer failure is this prompt's error
            out.append((p, None, f"prompt {p.id!r}: cannot tokenize: {type(exc).__name__}: {exc}"))
            continue
        if len(ids) + unit.strategy.max_tokens > max_len:
            out.append((p, None, f"prompt {p.id!r} is too long: {len(ids)} tokens + max_tokens "
                                 f"{unit.strategy.max_tokens} > engine.max_model_len {max_len}; shorten the "
                                 f"prompt, lower max_tokens or raise engine.max_model_len"))
            continue
        out.append((p, ids, None))
    return out


def execute_unit(engine: Any, unit: WorkUnit) -> UnitResult:
    strategy = unit.strategy.build()
    prepared = prepare_prompts(engine, unit)
    rows: list[dict[str, Any]] = []
    todo: list[tuple[dict[str, Any], list[int]]] = []
    for prompt, ids, error in prepared:
        for s in range(unit.strategy.samples_per_prompt):
            row = new_row(unit, prompt, s, sample_seed(unit.seed, prompt.id, s))
            rows.append(row)
            if error:
                row["error"] = error
            else:
                row["prompt_tokens"] = len(ids)
                todo.append((row, ids))

    t0 = time.perf_counter()
    if runs_stepwise(engine, strategy):
        run_stepwise(engine, unit, strategy, todo)
    else:
        _run_native(engine, unit, strategy, todo)
    gen_seconds = time.perf_counter() - t0
    score_on_engine(engine, [r for r, _ in todo], [ids for _, ids in todo], unit.metrics or ())
    for r in rows:
        r.pop("_token_logprobs", None)
        # Cost columns a strategy did not fill itself: one request per sample, computing the
        # uncached prompt tail and the generated tokens.
        if r.get("computed_tokens") is None and r.get("prompt_tokens") is not None:
            r["computed_tokens"] = r["prompt_tokens"] - (r.get("cached_tokens") or 0) + r["completion_tokens"]
        if r.get("engine_requests") is None and not r.get("error"):
            r["engine_requests"] = 1
    generated = sum(r["completion_tokens"] for r in rows)
    for r in rows:
        r["unit_seconds"] = gen_seconds
    return UnitResult(unit.id, rows, gen_seconds, generated)


def runs_stepwise(engine: Any, strategy: Any) -> bool:
    """Whether ``strategy`` drives the engine step by step here. A sampler asked to run inside
    generate falls back to its stepwise reference on an engine without the sampler
    processor (same rule, numpy draw), rather than sampling unmasked."""
    if strategy.runs_stepwise():
        return True
    return bool(getattr(strategy, "in_engine_rule", False)) and not getattr(engine, "samplers_in_engine", False)


def _run_native(engine: Any, unit: WorkUnit, strategy: Any, todo: list[tuple[dict[str, Any], list[int]]]) -> None:
    base = strategy.sampling_kwargs()
    if unit.metrics and "perplexity" in unit.metrics:
        base["logprobs"] = 0  # raw logprob of each sampled token: perplexity at no extra request
    params = []
    for row, _ in todo:
        kwargs = dict(base, max_tokens=unit.strategy.max_tokens, stop=list(unit.stop) or None)
        if not strategy.deterministic:
            kwargs["seed"] = row["seed"]
        params.append(engine.sampling_params(**kwargs))
    outs = engine.generate([ids for _, ids in todo], params)
    for (row, _), out in zip(todo, outs):
        if out.error:
            row["error"] = f"prompt {row['prompt_id']!r}: engine rejected the request: {out.error}"
            continue
        row.update(completion=out.text, completion_tokens=len(out.token_ids), finish_reason=out.finish_reason,
                   latency_s=out.latency_s, cached_tokens=out.cached_tokens)
        if out.token_logprobs is not None:
            row["_token_logprobs"] = out.token_logprobs

"""Runs one work unit on an engine and returns its rows. Plain Python: the Ray actor
calls it in the engine's process, and tests call it directly."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from harness.engine.stepdriver import run_stepwise
from harness.metrics import score_on_engine
from harness.plan import WorkUnit
from harness.tasks import Prompt
from harness.rows import new_row
from harness.seeding import sample_seed


@dataclass
class UnitResult:
    unit_id: str
    rows: list[dict[str, Any]]
    #: the unit's generation seconds: the median of ``timing_runs``
    gen_seconds: float
    generated_tokens: int
    engine_info: dict[str, Any] = field(default_factory=dict)
    #: seconds of each timed generation of the unit (generation.timing_repeats of them)
    timing_runs: list[float] = field(default_factory=list)
    #: warm-up seconds spent on the engine just before this unit (never in gen_seconds)
    warmup_seconds: float = 0.0
    #: whether every timed repeat produced the same completions as the first
    repeats_agree: bool = True


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
    """Generate the unit's rows, score them, fill the cost columns.

    Cost rule (the same for every unit wherever it sits in the plan): the warm-up runs
    first, untimed (:func:`warm_up`); then each timed repeat starts from an empty prefix
    cache and tail cache (unless ``engine.share_prefix_cache``), and its seconds are the
    generation alone: no prompt preparation, warm-up, scoring or queueing."""
    strategy = unit.strategy.build()
    prepared = prepare_prompts(engine, unit)
    warm = warm_up(engine, unit, strategy, prepared)
    shared = bool(getattr(engine.options, "share_prefix_cache", False))
    runs: list[float] = []
    rows: list[dict[str, Any]] = []
    todo: list[tuple[dict[str, Any], list[int]]] = []
    agree = True
    for repeat in range(max(1, unit.timing_repeats)):
        if not shared:
            engine.reset_caches()
        rows_r, todo_r, seconds = _generate(engine, unit, strategy, prepared)
        runs.append(seconds)
        if repeat == 0:
            rows, todo = rows_r, todo_r
        else:
            agree = agree and [r["completion"] for r in rows_r] == [r["completion"] for r in rows]
        for r, again in zip(rows, rows_r):
            r.setdefault("latency_runs", []).append(again.get("latency_s"))
    gen_seconds = statistics.median(runs)
    score_on_engine(engine, [r for r, _ in todo], [ids for _, ids in todo], unit.metrics or ())
    for r in rows:
        r.pop("_token_logprobs", None)
        # Cost columns a strategy did not fill itself: one request per sample, whose forward
        # passes cover the uncached prompt tail and one position per decode step (the
        # prefill already yields the first token).
        if r.get("computed_tokens") is None and r.get("prompt_tokens") is not None:
            r["computed_tokens"] = (r["prompt_tokens"] - (r.get("cached_tokens") or 0)
                                    + max(r["completion_tokens"] - 1, 0))
        if r.get("engine_requests") is None and not r.get("error"):
            r["engine_requests"] = 1
        r["unit_seconds"] = gen_seconds
        r["timing_runs"] = list(runs)
        if any(v is None for v in r["latency_runs"]):
            r["latency_runs"] = None
    generated = sum(r["completion_tokens"] for r in rows)
    return UnitResult(unit.id, rows, gen_seconds, generated, timing_runs=runs, warmup_seconds=warm,
                      repeats_agree=agree)


def _generate(engine: Any, unit: WorkUnit, strategy: Any,
              prepared: list[tuple[Prompt, list[int] | None, str | None]]) -> tuple[list[dict[str, Any]], list, float]:
    """One generation of the unit from fresh rows: (rows, the rows that ran with their
    prompt ids, seconds of the generation alone)."""
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
    runner, path = getattr(engine, "model_runner", None), decode_path(engine, strategy)
    for row in rows:
        row["model_runner"], row["decode_path"] = runner, path
    t0 = time.perf_counter()
    if runs_stepwise(engine, strategy):
        run_stepwise(engine, unit, strategy, todo)
    else:
        _run_native(engine, unit, strategy, todo)
    return rows, todo, time.perf_counter() - t0


#: A warm-up prompt's length at most: one full 32-token KV block and a partial tail.
WARMUP_PROMPT_TOKENS = 48


def warm_key(engine: Any, strategy: Any, n_sequences: int) -> tuple:
    """What a warm-up covers: the strategy (its sampler path and, for a stepwise one, its
    request pattern) and the batch size, bucketed to the next power of two."""
    return (strategy.name, runs_stepwise(engine, strategy), 1 << max(0, n_sequences - 1).bit_length())


def warm_up(engine: Any, unit: WorkUnit, strategy: Any,
            prepared: list[tuple[Prompt, list[int] | None, str | None]]) -> float:
    """Before the first timed unit of a (strategy, batch bucket) on this engine: run this
    unit's strategy on its own prompts, each cut to its first :data:`WARMUP_PROMPT_TOKENS`
    tokens, for ``engine.warmup_tokens`` tokens, discard the rows, and empty the caches
    again. It pays what a first batch of that shape pays (allocations for that many
    sequences, the sampler path, a full KV block and a partial tail per prompt) without
    paying the unit's whole prefill again, and gives no unit a cached prompt.
    Returns the seconds spent (0.0 when already warm); they go to the engine's warm-up."""
    tokens = int(getattr(engine.options, "warmup_tokens", 0) or 0)
    n = sum(unit.strategy.samples_per_prompt for _, ids, _ in prepared if ids is not None)
    key = warm_key(engine, strategy, n)
    if not tokens or not n or key in engine.warm.keys:
        return 0.0
    t0 = time.perf_counter()
    short = dataclasses.replace(unit, strategy=dataclasses.replace(unit.strategy, max_tokens=min(
        tokens, unit.strategy.max_tokens)), timing_repeats=1)
    cut = [(prompt, None if ids is None else ids[:WARMUP_PROMPT_TOKENS], error) for prompt, ids, error in prepared]
    _generate(engine, short, strategy, cut)
    engine.reset_caches()  # also with share_prefix_cache: the warm-up gives no unit its prompts
    seconds = time.perf_counter() - t0
    engine.warm.keys.add(key)
    engine.warm.count += 1
    engine.warm.seconds += seconds
    return seconds


def runs_stepwise(engine: Any, strategy: Any) -> bool:
    """Whether ``strategy`` drives the engine step by step here. A sampler asked to run inside
    generate falls back to its stepwise reference on an engine without the sampler
    processor (same rule, numpy draw), rather than sampling unmasked."""
    if strategy.runs_stepwise():
        return True
    return bool(getattr(strategy, "in_engine_rule", False)) and not getattr(engine, "samplers_in_engine", False)


def decode_path(engine: Any, strategy: Any) -> str:
    """Where ``strategy``'s tokens are decided on ``engine`` (the rows' ``decode_path``):
    "processor" (a logits processor inside vLLM: a sampler's rule in ``generate``, or a lookahead strategy's
    nucleus counts), "native" (vLLM's own sampling), "flat_logprobs" (a lookahead strategy's counts from
    full-vocabulary logprobs: no nucleus processor) or "stepwise" (the step driver's own rule,
    one request per sequence per step: beam search, a sampler without the processor)."""
    if runs_stepwise(engine, strategy):
        if getattr(strategy, "asks_nucleus_counts", False):
            return "processor" if getattr(engine, "nucleus_in_engine", False) else "flat_logprobs"
        return "stepwise"
    return "processor" if getattr(strategy, "in_engine_rule", False) else "native"


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

"""Metrics: each carries its direction and aggregation, so leaderboards and the
regression gate never guess which way is better.

A metric is computed per sample (a float, or None when it does not apply, e.g. a
reference metric on a prompt without reference) and aggregated per unit.

Three kinds of computation:

- row metrics (``batch=False``): ``fn(row) -> float | None``;
- batch metrics (``batch=True``): ``fn(rows) -> list[float | None]`` over all rows of one
  unit at once (several samples per prompt, a unit's tokens/s, batched embeddings, code
  execution in parallel subprocesses);
- engine metrics (``stage="engine"``): filled in the engine's process by
  :func:`score_on_engine` (perplexity needs the scorer model); :func:`score_rows` leaves
  their values alone.

This module holds the registry and the scoring; the built-in metrics register themselves
from :mod:`~harness.metrics.task`, :mod:`~harness.metrics.text` and
:mod:`~harness.metrics.cost` (``harness.metrics`` imports all three).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from harness.errors import RegistryError
from harness.registry import Registry
from harness.tasks.extract import row_answer
from harness.tasks.lm_eval_bridge import row_lm_eval_answer, score_lm_eval_rows

#: The allowed aggregations of a metric's per-sample values.
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "mean": lambda v: sum(v) / len(v),
    "median": lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else (sorted(v)[len(v) // 2 - 1] + sorted(v)[len(v) // 2]) / 2,
    "max": max,
    "min": min,
    "sum": sum,
}
#: What a metric may need.
NEEDS = frozenset({"reference", "samples", "scorer", "embedder", "features", "code"})
STAGES = ("row", "engine")


#: A metric's direction in words, as reports, tables and strategy column declarations say it.
DIRECTIONS = {True: "higher", False: "lower", None: "none"}


def direction_word(higher_is_better: bool | None) -> str:
    """'higher', 'lower' or 'none' (informational)."""
    return DIRECTIONS[higher_is_better]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., Any]
    #: True: higher is better; False: lower is better; None: informational (no direction,
    #: never ranked or gated).
    higher_is_better: bool | None
    description: str
    aggregation: str = "mean"
    #: what it needs: "reference", "samples" (several per prompt), "scorer" (a model),
    #: "embedder" (a sentence-embedding model), "features" (a feature model's hidden states),
    #: "code" (runs generated code in a sandbox)
    needs: frozenset[str] = field(default_factory=frozenset)
    default: bool = True
    #: fn takes all rows of a unit and returns one value per row
    batch: bool = False
    #: "row": computed by score_rows (driver); "engine": by score_on_engine (engine process)
    stage: str = "row"
    #: a short unit for tables ("%", "tok/s", ...)
    unit: str = ""
    #: () -> None when the metric can be computed here, else why not and how to fix it (an
    #: optional extra that is not installed); an unavailable metric leaves its column empty
    problem: Callable[[], str | None] | None = None
    #: one value per unit (and prompt set), repeated on each of its rows (a set-level
    #: metric such as MAUVE): an interval over prompts says nothing about it
    per_unit: bool = False

    def unavailable(self) -> str | None:
        """None when the metric can be computed here, else why not (its ``problem``)."""
        return None if self.problem is None else self.problem()

    @property
    def runs_code(self) -> bool:
        """Scoring it executes generated code (in the sandbox)."""
        return "code" in self.needs

    @property
    def direction(self) -> str:
        return direction_word(self.higher_is_better)

    def aggregate(self, values: Sequence[float | None]) -> float | None:
        vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        return AGGREGATIONS[self.aggregation](vals) if vals else None


def _check_metric(name: str, obj: Any) -> None:
    """A ``module:attr`` metric named in a config must be a Metric, wherever it is resolved."""
    if not isinstance(obj, Metric):
        raise RegistryError(f"metric {name!r} names a {type(obj).__name__}, not a harness.metrics.Metric; "
                            f"build it with register_metric or Metric(...)")


METRICS: Registry = Registry("metric", validate=_check_metric)


def register_metric(name: str, *, higher_is_better: bool | None, description: str, aggregation: str = "mean",
                    needs: Sequence[str] = (), default: bool = True, batch: bool = False, stage: str = "row",
                    unit: str = "", problem: Callable[[], str | None] | None = None, per_unit: bool = False):
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"metric {name!r}: aggregation must be one of {sorted(AGGREGATIONS)}, got {aggregation!r}")
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"metric {name!r}: needs must be among {sorted(NEEDS)}, got {sorted(unknown)}")
    if stage not in STAGES:
        raise ValueError(f"metric {name!r}: stage must be one of {STAGES}, got {stage!r}")

    def decorator(fn: Callable[..., Any]):
        METRICS.register(name, Metric(name, fn, higher_is_better, description, aggregation, frozenset(needs),
                                      default, batch, stage, unit, problem, per_unit))
        return fn
    return decorator


def get_metric(name: str) -> Metric:
    return METRICS.get(name)


def metric_direction(name: str) -> bool | None:
    """higher_is_better of a registered metric, or None when unknown or without direction."""
    if name not in METRICS:
        return None
    return METRICS.get(name).higher_is_better


def is_missing(v: Any) -> bool:
    """None or a float NaN (what pandas gives for a null string cell)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def is_error(row: dict[str, Any]) -> bool:
    return not is_missing(row.get("error")) and row.get("error") != ""


# ---- selection and scoring --------------------------------------------------------------------

def default_metrics() -> list[str]:
    return [n for n in METRICS.names() if METRICS.get(n).default]


def score_rows(rows: list[dict[str, Any]], names: Sequence[str]) -> None:
    """Fill each row's ``extracted`` answer (its prompt set's extractor over the completion,
    :func:`harness.tasks.extract.row_answer`) and its metric columns, in place (None for
    error rows). ``rows`` should be the rows of one unit (batch metrics group them by prompt
    and unit). Engine metrics are left as :func:`score_on_engine` set them (None when it
    did not run).

    Rows of an lm-eval task (extractor ``lm_eval:<task>``) are scored by the task itself
    first, once per task (:func:`harness.tasks.lm_eval_bridge.score_lm_eval_rows`): their
    ``extracted`` is lm-eval's filtered response, and the metrics read lm-eval's values
    from ``row['_lm_eval']`` (``exact_match`` is lm-eval's exact_match)."""
    metrics = [METRICS.get(n) for n in names]
    ok = [r for r in rows if not is_error(r)]
    score_lm_eval_rows(ok)
    for r in rows:
        r["extracted"] = None if is_error(r) else row_lm_eval_answer(r) if "_lm_eval" in r else row_answer(r)
    for m in metrics:
        if m.stage == "engine":
            for r in rows:
                r.setdefault(m.name, None)
                if is_error(r):
                    r[m.name] = None
            continue
        for r in rows:
            r[m.name] = None
        if not ok:
            continue
        if m.batch:
            for r, v in zip(ok, m.fn(ok)):
                r[m.name] = None if v is None else float(v)
        else:
            for r in ok:
                v = m.fn(r)
                r[m.name] = None if v is None else float(v)


def score_on_engine(engine: Any, rows: list[dict[str, Any]], prompt_ids_by_row: Any,
                    metric_names: Sequence[str] | None = None) -> None:
    """Engine-stage metrics (perplexity), run in the engine's process after generation.

    ``prompt_ids_by_row`` maps ``id(row)`` to the prompt token ids the row was generated
    from (or is a list parallel to ``rows``). ``metric_names`` None means the defaults.

    A row carrying ``_token_logprobs`` (the raw logprob of each generated token, as vLLM
    returns with ``SamplingParams(logprobs=0)`` during generation) is scored from them at
    no cost. Otherwise the completion is re-tokenised (no special tokens) and scored as a
    continuation of the prompt ids with one prefill request per row (``prompt_logprobs=0``,
    batched); vLLM skips the prefix cache for such requests, so this costs a full prefill
    of prompt + completion (measured: about a third of the generation time on CPU).
    """
    names = default_metrics() if metric_names is None else list(metric_names)
    if "perplexity" not in names:
        return
    if isinstance(prompt_ids_by_row, dict):
        lookup = lambda i, r: prompt_ids_by_row.get(id(r))  # noqa: E731
    else:
        lookup = lambda i, r: prompt_ids_by_row[i]  # noqa: E731
    todo: list[tuple[dict[str, Any], list[int], list[int]]] = []
    for i, r in enumerate(rows):
        r["perplexity"] = None
        given = r.get("_token_logprobs")
        if given is not None and not is_error(r):
            # the generating engine already returned each sampled token's raw logprob: no prefill
            vals = [v for v in given if v is not None and math.isfinite(v)]
            r["perplexity"] = math.exp(-sum(vals) / len(vals)) if vals else None
            continue
        ids = lookup(i, r)
        if is_error(r) or ids is None or not isinstance(r.get("completion"), str) or not r["completion"]:
            continue
        comp = list(engine.tokenizer(r["completion"], add_special_tokens=False).input_ids)
        if comp:
            todo.append((r, list(ids), comp))
    if not todo:
        return
    logprobs = engine.completion_logprobs([p for _, p, _ in todo], [c for _, _, c in todo])
    for (r, _, _), lps in zip(todo, logprobs):
        vals = [v for v in lps if v is not None and math.isfinite(v)]
        r["perplexity"] = math.exp(-sum(vals) / len(vals)) if vals else None


def describe_metrics() -> list[dict[str, Any]]:
    """One dict per registered metric (for docs and the CLI)."""
    out = []
    for n in METRICS.names():
        m = METRICS.get(n)
        out.append({"name": n, "direction": m.direction, "aggregation": m.aggregation, "needs": sorted(m.needs),
                    "default": m.default, "stage": m.stage, "description": m.description})
    return out

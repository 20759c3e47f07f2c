"""The sample row: the one definition of its columns and their Parquet types.

A row has the harness's base columns (:data:`BASE_FIELDS`: who made it, from which prompt
and seed, what came out, what it cost), then the columns the run's strategies declare
(``Strategy.sample_columns``: per-sample metrics of the strategy's own), the
per-step trace ``steps`` (a list of structs whose fields the strategies declare in
``Strategy.step_fields``), ``error``, and one float column per metric.

The worker builds rows with :func:`new_row`, the step driver fills a stepwise sample with
:func:`fill_decoded`, the report writes and reads them with :func:`sample_schema`.
Nothing here knows any particular strategy.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import pyarrow as pa

from strategies.base import STEP_BASICS, Column, Decoded

#: Parquet type of each column type a strategy may declare (strategies.base.COLUMN_TYPES).
ARROW_TYPES = {"float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(), "string": pa.string(),
               "bool": pa.bool_()}

BASE_FIELDS: list[pa.Field] = [
    pa.field("run_id", pa.string()), pa.field("unit_id", pa.string()), pa.field("model_name", pa.string()),
    pa.field("model_ref", pa.string()),
    pa.field("strategy_name", pa.string()), pa.field("strategy_label", pa.string()),
    pa.field("strategy_id", pa.string()), pa.field("strategy_params", pa.string()),
    pa.field("prompt_set", pa.string()), pa.field("prompt_id", pa.string()), pa.field("prompt_hash", pa.string()),
    pa.field("prompt", pa.string()), pa.field("reference", pa.string()), pa.field("aliases", pa.list_(pa.string())),
    # the prompt set's answer extractor (null: none), and the answer it found in the completion
    pa.field("extractor", pa.string()),
    pa.field("sample_index", pa.int32()), pa.field("seed", pa.int64()), pa.field("base_seed", pa.int64()),
    pa.field("completion", pa.string()), pa.field("extracted", pa.string()), pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()), pa.field("finish_reason", pa.string()),
    pa.field("latency_s", pa.float64()), pa.field("unit_seconds", pa.float64()),
    pa.field("timing_runs", pa.list_(pa.float64())), pa.field("latency_runs", pa.list_(pa.float64())),
    pa.field("cached_tokens", pa.int32()), pa.field("engine_requests", pa.int32()),
    pa.field("computed_tokens", pa.int64()),
    # where the row was made: the Ray node id of the engine's actor, vLLM's model runner
    # ("v1" or "v2"), and the decode path ("processor": inside generate through a logits
    # processor; "native": vLLM's own sampling; "flat_logprobs" or "stepwise": the step driver)
    pa.field("node_id", pa.string()), pa.field("model_runner", pa.string()), pa.field("decode_path", pa.string()),
]
#: The last columns before the metrics: the step trace, then the row's error (None: a good row).
TRACE_FIELD, ERROR_FIELD = "steps", "error"


def union_columns(groups: Iterable[Sequence[Column]], what: str) -> list[Column]:
    """The columns of several strategies, each name once, in first-declared order; two
    strategies that declare one name must agree on its type and direction."""
    out: dict[str, Column] = {}
    for cols in groups:
        for c in cols:
            seen = out.get(c.name)
            if seen is None:
                out[c.name] = c
            elif (seen.type, seen.direction) != (c.type, c.direction):
                raise ValueError(f"{what} {c.name!r} is declared twice with different types or directions: "
                                 f"{seen.type}/{seen.direction} and {c.type}/{c.direction}; rename one of them")
    return list(out.values())


def step_type(step_fields: Sequence[Column]) -> pa.DataType:
    # Parquet cannot hold a struct without fields: a run whose strategies trace nothing
    # still types its (all-null) trace column with the basic step fields.
    return pa.struct([(c.name, ARROW_TYPES[c.type]) for c in (step_fields or STEP_BASICS)])


def sample_schema(metric_names: Sequence[str], sample_columns: Sequence[Column] = (),
                  step_fields: Sequence[Column] = ()) -> pa.Schema:
    """The schema of every unit file in a run: base columns, the strategies' columns, the
    step trace, error, then one float column per metric."""
    fields = list(BASE_FIELDS) + [pa.field(c.name, ARROW_TYPES[c.type]) for c in sample_columns]
    fields += [pa.field(TRACE_FIELD, pa.list_(step_type(step_fields))), pa.field(ERROR_FIELD, pa.string())]
    names = {f.name for f in fields}
    clash = [m for m in metric_names if m in names]
    if clash:
        raise ValueError(f"metric names {clash} clash with report columns")
    if len(names) != len(fields):
        raise ValueError("a strategy column has the name of a base column; rename it")
    return pa.schema(fields + [pa.field(m, pa.float64()) for m in metric_names])


def table_of(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as an Arrow table of ``schema``: a column a row lacks is null, and so is a trace
    field a step lacks (a strategy fills only the fields it declares)."""
    trace = schema.field(TRACE_FIELD).type.value_type if TRACE_FIELD in schema.names else None
    keys = [f.name for f in trace] if trace is not None else []
    full = []
    for r in rows:
        row = {f.name: r.get(f.name) for f in schema}
        if keys and row.get(TRACE_FIELD):
            row[TRACE_FIELD] = [{k: st.get(k) for k in keys} for st in row[TRACE_FIELD]]
        full.append(row)
    return pa.Table.from_pylist(full, schema=schema)


def new_row(unit: Any, prompt: Any, sample_index: int, seed: int) -> dict[str, Any]:
    """A row before generation: the unit's and the prompt's identity, empty outputs."""
    return {
        "unit_id": unit.id, "model_name": unit.model, "model_ref": unit.model_ref, "strategy_name": unit.strategy.name,
        "strategy_label": unit.strategy.label, "strategy_id": unit.strategy.id,
        "strategy_params": json.dumps(unit.strategy.params, sort_keys=True),
        "prompt_set": prompt.set, "prompt_id": prompt.id, "prompt_hash": prompt.hash, "prompt": prompt.text,
        "reference": prompt.reference, "aliases": list(prompt.aliases),
        "extractor": getattr(prompt, "extractor", None), "sample_index": sample_index,
        "seed": seed, "base_seed": unit.seed, "completion": None, "extracted": None, "prompt_tokens": None,
        "completion_tokens": 0, "finish_reason": "error", "latency_s": None, "cached_tokens": 0, "error": None,
    }


def fill_decoded(row: dict[str, Any], dec: Decoded, text: str, sample_columns: Sequence[Column]) -> None:
    """A stepwise sample's outputs into its row: text, counts, cost, the trace, and the
    strategy's declared per-sample columns from ``dec.metrics``."""
    m = dec.metrics
    row.update(completion=text, completion_tokens=len(dec.token_ids), finish_reason=dec.finish_reason,
               latency_s=m.get("latency_s"), engine_requests=dec.engine_requests, cached_tokens=dec.cached_tokens,
               computed_tokens=dec.computed_tokens, steps=dec.steps or None)
    for c in sample_columns:
        row[c.name] = m.get(c.name)


def columns_meta(sample_columns: Sequence[Column], step_fields: Sequence[Column]) -> dict[str, list[dict[str, Any]]]:
    """The declarations as run.json keeps them, for readers of the report (the leaderboard)."""
    return {"sample": [c.as_dict() for c in sample_columns], "steps": [c.as_dict() for c in step_fields]}


def columns_from_meta(meta: Any) -> tuple[list[Column], list[Column]]:
    """The declarations of a run.json ``columns`` entry (plain data: reading them runs no code)."""
    if not isinstance(meta, dict):
        return [], []
    out = []
    for key in ("sample", "steps"):
        cols = []
        for d in meta.get(key) or []:
            try:
                cols.append(Column(**{k: d[k] for k in ("name", "type", "direction", "description", "leaderboard")
                                      if k in d}))
            except (TypeError, ValueError, KeyError):
                continue  # a malformed declaration is skipped, never trusted
        out.append(cols)
    return out[0], out[1]

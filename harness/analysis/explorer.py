"""The sample explorer (``deceval view``): one self-contained static HTML file to read a
report sample by sample: prompts as rows, strategies as columns, completions side by side
with their metrics and per-sample cost, a word-level diff of each strategy against a
baseline column, and the regressed and improved prompts counted and listed first.

The page needs no server and no network: its script and style are inlined, allowed by a
Content-Security-Policy that names their hashes and nothing else (no other script, no
fetch, no image but ``data:``). The samples travel as compact JSON in a
``<script type="application/json">`` tag, with ``<``, ``>`` and ``&`` escaped, and every text
of a report is put on the page as text (``textContent``), never parsed as HTML: a
completion holding ``<script>`` shows as typed. Reading a report runs no code.

Baseline columns: with ``baseline`` (a strategy label) every other strategy of the same run
is diffed against that label; without it and with several runs, each strategy of a later
run is diffed against the same label in the first run (what ``deceval compare BASELINE
CANDIDATE`` pairs). Rows are paired like the gate pairs them: model, prompt set, prompt id,
base seed and sample index.

Reports are found with :func:`harness.report.find_reports` and read with
:func:`harness.report.open_report`, the one reader of a finished report, so a report may be a
local folder or a URI (``s3://bucket/prefix/<run_id>``); the page is written with
:func:`harness.report.write_text_atomic`, to a file or a URI.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import shlex
from pathlib import Path
from typing import Any, Iterable, Sequence

from harness.analysis.explorer_page import PAGE_CSS, PAGE_JS
from harness.analysis.leaderboard import QUALITY_METRICS
from harness.metrics import METRICS
from harness.report import Where, find_reports, locate, open_report, write_text_atomic
from harness.rows import columns_from_meta

#: The row identity, as the regression gate pairs samples (with the model in front).
ROW_KEY = ("model", "prompt_set", "prompt_id", "base_seed", "sample_index")
#: Per-sample cost columns shown under each completion, in this order.
COST_COLUMNS = ("completion_tokens", "prompt_tokens", "latency_s", "computed_tokens", "engine_requests",
                "cached_tokens")
#: Report columns that are neither metrics nor shown as such.
_NOT_METRICS = {"sample_index", "seed", "base_seed", "unit_seconds", *COST_COLUMNS}


def report_sources(paths: Iterable[str | Where]) -> list[Where]:
    """The reports to read: each folder or URI holding a run.json, and every run inside a
    folder or prefix of runs (``reports/``, ``s3://bucket/reports``)."""
    return find_reports(paths)


def _num(v: Any) -> float | int | None:
    """A JSON-safe number (6 significant digits), or None for missing and NaN."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or math.isinf(f):
        return None
    if f.is_integer() and abs(f) < 2 ** 53:
        return int(f)
    return float(f"{f:.6g}")


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def _steps(trace: Any) -> dict[str, list] | None:
    """A sample's step trace as columns ``{field: [value per step]}``; fields with no value
    at any step are left out; None when there is no trace."""
    if trace is None:
        return None
    steps = list(trace)
    if not steps:
        return None
    fields: dict[str, list] = {}
    for k in steps[0].keys() if isinstance(steps[0], dict) else ():
        vals = [_num(st.get(k)) if isinstance(st, dict) else None for st in steps]
        if any(v is not None for v in vals):
            fields[k] = vals
    return fields or None


def _metric_columns(df: Any, metas: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The numeric per-sample columns to show: registered metrics, then the strategies'
    declared per-sample columns (from run.json), each with its direction."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in METRICS.names():
        if name in df.columns and name not in _NOT_METRICS and df[name].notna().any():
            m = METRICS.get(name)
            out.append({"name": name, "hib": m.higher_is_better, "desc": m.description})
            seen.add(name)
    for meta in metas:
        sample_cols, _ = columns_from_meta(meta.get("columns"))
        for c in sample_cols:
            if c.name in df.columns and c.name not in seen and c.name not in _NOT_METRICS and df[c.name].notna().any():
                hib = {"higher": True, "lower": False}.get(str(c.direction))
                out.append({"name": c.name, "hib": hib, "desc": c.description})
                seen.add(c.name)
    # declared columns of built-in strategies in reports that predate run.json's columns entry
    for name in ("mean_log_possibilities", "left_greedy_share", "mean_candidates"):
        if name in df.columns and name not in seen and df[name].notna().any():
            out.append({"name": name, "hib": None, "desc": ""})
            seen.add(name)
    return out


def _gated(meta: dict[str, Any]) -> list[str]:
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    reg = cfg.get("regression") if isinstance(cfg.get("regression"), dict) else {}
    gates = reg.get("gates") if isinstance(reg.get("gates"), dict) else {}
    return [str(g) for g in gates]


def explorer_data(reports: Sequence[str | Where], baseline: str | None = None,
                  metric: str | None = None, title: str | None = None, prefer: Sequence[str] = ()) -> dict[str, Any]:
    """The explorer's data: runs, columns (run x strategy label, each with the column it is
    diffed against), rows (one per paired sample key) and cells (one per sample).

    ``baseline``: a strategy label, the baseline column of every run (an unknown label is a
    ValueError naming the labels there are). ``metric``: the metric the paired differences
    start on (default: the first gated metric of the first run, else the first quality metric
    present, else the first metric); ``prefer``: metrics to start on when present, before those
    defaults (``deceval compare`` names its failing gated metrics)."""
    import pandas as pd

    sources = report_sources(reports)
    metas, frames = [], []
    for i, src in enumerate(sources):
        report = open_report(src)
        metas.append(report.meta)
        df = report.samples()
        df["_run"] = i
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for col in ("model", "strategy_label", "prompt_set", "prompt_id"):
        if col not in df.columns:
            raise ValueError(f"{sources[0]}: the report's rows lack the {col!r} column; is it a deceval report?")
    for col, default in (("base_seed", 0), ("sample_index", 0)):
        if col not in df.columns:
            df[col] = default
    metrics = _metric_columns(df, metas)
    names = [m["name"] for m in metrics]
    if metric is not None and metric not in names:
        raise ValueError(f"metric {metric!r} has no value in these reports; they have {names}")
    default_metric = metric or next((g for g in [*prefer, *_gated(metas[0])] if g in names), None) \
        or next((q for q in QUALITY_METRICS if q in names), None) or (names[0] if names else None)

    runs = [{"id": str(meta.get("run_id") or src.name), "source": str(src),
             "status": str(meta.get("status", ""))} for src, meta in zip(sources, metas)]
    labels_by_run = {i: sorted(set(map(str, g["strategy_label"]))) for i, g in df.groupby("_run")}
    if baseline is not None and not any(baseline in ls for ls in labels_by_run.values()):
        there = sorted({x for ls in labels_by_run.values() for x in ls})
        raise ValueError(f"--baseline {baseline!r} is not a strategy label of these reports; they have {there}")
    several = len(sources) > 1
    cols, col_index = [], {}
    for run in range(len(sources)):
        for label in labels_by_run.get(run, []):
            col_index[(run, label)] = len(cols)
            cols.append({"label": label + (f" @ {runs[run]['id']}" if several else ""), "strategy": label,
                         "run": run, "base": None})
    for (run, label), ci in col_index.items():
        if baseline is not None:
            base = col_index.get((run, baseline), col_index.get((0, baseline)))
        else:
            base = col_index.get((0, label)) if run > 0 else None
        cols[ci]["base"] = base if base != ci else None

    models = sorted(set(map(str, df["model"])))
    tasks = sorted(set(map(str, df["prompt_set"])))
    model_ix, task_ix = {m: i for i, m in enumerate(models)}, {t: i for i, t in enumerate(tasks)}
    df = df.sort_values(["model", "prompt_set", "prompt_id", "base_seed", "sample_index", "_run", "strategy_label"],
                        kind="stable")
    rows, row_ix, cells = [], {}, []
    present = set(df.columns)
    get = {c: (df[c].tolist() if c in present else [None] * len(df)) for c in
           ("model", "prompt_set", "prompt_id", "base_seed", "sample_index", "prompt", "reference", "_run",
            "strategy_label", "completion", "extracted", "finish_reason", "seed", "error", "steps",
            *COST_COLUMNS, *names)}
    for i in range(len(df)):
        key = (str(get["model"][i]), str(get["prompt_set"][i]), str(get["prompt_id"][i]),
               _num(get["base_seed"][i]), _num(get["sample_index"][i]))
        r = row_ix.get(key)
        if r is None:
            r = row_ix[key] = len(rows)
            rows.append([model_ix[key[0]], task_ix[key[1]], key[2], key[3], key[4], _text(get["prompt"][i]),
                         _text(get["reference"][i])])
        elif rows[r][5] is None:
            rows[r][5], rows[r][6] = _text(get["prompt"][i]), _text(get["reference"][i])
        cells.append([r, col_index[(get["_run"][i], str(get["strategy_label"][i]))],
                      _text(get["completion"][i]), _text(get["extracted"][i]), _text(get["finish_reason"][i]),
                      _num(get["seed"][i]), _text(get["error"][i]),
                      [_num(get[m][i]) for m in names], [_num(get[c][i]) for c in COST_COLUMNS],
                      _steps(get["steps"][i])])
    return {"title": title or "deceval samples: " + ", ".join(r["id"] for r in runs), "runs": runs,
            "models": models, "tasks": tasks, "metrics": metrics, "metric": default_metric,
            "cost": list(COST_COLUMNS), "cols": cols, "rows": rows, "cells": cells}


def json_for_script(data: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` element: no ``<``, ``>`` or
    ``&`` (so no ``</script>`` can end it early) and no line separators."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def to_html(data: dict[str, Any]) -> str:
    """The page: data, style and script inline; the CSP allows exactly that script and style."""
    csp = (f"default-src 'none'; script-src '{_sha256(PAGE_JS)}'; style-src '{_sha256(PAGE_CSS)}'; "
           f"img-src data:; base-uri 'none'; form-action 'none'")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(data['title'])}</title>\n<style>{PAGE_CSS}</style>\n</head>\n<body>\n"
            "<noscript>This page needs JavaScript to show the samples.</noscript>\n"
            f"<script type=\"application/json\" id=\"deceval-data\">{json_for_script(data)}</script>\n"
            f"<script>{PAGE_JS}</script>\n</body>\n</html>\n")


def default_out(reports: Sequence[str | Where]) -> Where:
    """``<first report>/explorer.html``, beside its run.json (a folder or a URI)."""
    return report_sources(reports[:1])[0] / "explorer.html"


def write_explorer(reports: Sequence[str | Where], out: Where | str, baseline: str | None = None,
                   metric: str | None = None, title: str | None = None,
                   prefer: Sequence[str] = ()) -> tuple[Where, dict[str, Any]]:
    """Write the explorer of ``reports`` to ``out``, a file or a URI (written whole: a
    temporary file renamed into place, or one upload); returns where and the data on it."""
    out = locate(out, "--out")
    if isinstance(out, Path):
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give a file path such as {out / 'explorer.html'}")
        if not out.parent.is_dir():
            raise ValueError(f"--out {out}: the folder {out.parent} does not exist; create it or write elsewhere")
    data = explorer_data(reports, baseline, metric, title, prefer)
    return write_text_atomic(out, to_html(data)), data


def view_command(reports: Sequence[str | Where], out: Where | str | None = None, metric: str | None = None) -> str:
    """The ``deceval view`` command line for these reports (printed by ``deceval compare``)."""
    parts = ["deceval", "view", *map(str, reports)]
    if metric:
        parts += ["--metric", metric]
    if out is not None:
        parts += ["--out", str(out)]
    return " ".join(shlex.quote(p) for p in parts)

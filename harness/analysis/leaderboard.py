"""Leaderboards: strategies ranked per model and metric, in each metric's direction, over
one run or many; written as Markdown and as a static HTML page with plots.

Labels (strategy labels, model names, run ids) come from user configs and are shown as
plain text everywhere: Markdown cells are escaped (``md_escape``), CSV string cells that
a spreadsheet would read as a formula get a leading ``'`` (``csv_safe``), the HTML page
escapes every one (``html.escape``), and plot text is never parsed as mathtext or TeX.

Import-light at module level (pandas/numpy only through harness.analysis.stats); matplotlib is
imported when plots are drawn.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from harness.analysis.cost import TIMING_METRICS, cost_table, repeat_values, t_interval
from harness.analysis.stats import summary
from harness.metrics import METRICS, default_metrics, score_rows
from harness.models.capacity import run_capacities
from harness.plan import builtin_columns
from harness.report import Where, find_reports, locate, read_run_json, read_samples, write_text_atomic
from harness.rows import columns_from_meta, union_columns
from strategies.base import Column

#: Columns the report writes that are summarised like metrics when present.
#: Quality metrics for the quality/diversity plot, in order of preference.
QUALITY_METRICS = ("pass_at_1", "numeric_match", "contains_answer", "exact_match", "coherence")
COST_METRICS = ("gen_tokens_per_s", "computed_per_generated", "sample_latency_s")  # plotted per strategy
#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Keyword arguments for every matplotlib text artist that shows a label: drawn as typed,
#: never as mathtext ("$...$") or TeX.
PLAIN_TEXT = {"usetex": False, "parse_math": False}
_MD_SPECIAL = {"\\": "\\\\", "|": "\\|", "`": "\\`", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_SPECIAL_RE = re.compile(r"[\\|`&<>]")
_CONTROL_RE = re.compile(r"\r\n|[\x00-\x1f\x7f-\x9f]")  # newlines, tabs, terminal escapes


def expand_reports(paths: Iterable[Where | str]) -> list[Where]:
    """Run folders (holding run.json) from the paths or URIs given; a folder of runs (e.g.
    ``reports/`` or ``s3://bucket/reports``) expands to every run inside it
    (:func:`harness.report.find_reports`)."""
    return find_reports(paths)


def rescore_missing(df: Any, metrics: Sequence[str], *, execute_code: bool = False) -> Any:
    """Compute the driver-side metrics in ``metrics`` that the report lacks (a report
    written with an older metric set), unit by unit. Engine metrics (perplexity) cannot
    be recomputed without the engine and stay absent; so do metrics that run generated code
    (pass@k) unless ``execute_code``: reading a report never runs code by default. Even then
    only rows of the humaneval set's real tasks run (``harness.metrics.sandbox.humaneval_task``:
    prompt set and prompt hash), in the sandbox; a ``_humaneval`` column in the file is not
    taken for a result."""
    todo = [m for m in metrics if m in METRICS and m not in df.columns and METRICS.get(m).stage == "row"
            and (execute_code or not METRICS.get(m).runs_code)]
    if not todo or df.empty:
        return df
    df = df.reset_index(drop=True)
    records = df.to_dict("records")
    by_unit: dict[Any, list[int]] = {}
    for i, r in enumerate(records):
        by_unit.setdefault((r.get("run_id"), r.get("unit_id")), []).append(i)
    for idx in by_unit.values():
        score_rows([records[i] for i in idx], todo)
    for m in todo:
        df[m] = [records[i].get(m) for i in range(len(records))]
        df[m] = df[m].astype(float)
    return df


def default_leaderboard_metrics(df: Any) -> list[str]:
    """The report's metric columns, plus driver-side defaults it lacks that need no model."""
    present = [c for c in df.columns if c in METRICS]
    cheap = [m for m in default_metrics() if m not in present and METRICS.get(m).stage == "row"
             and not ({"embedder", "scorer"} & METRICS.get(m).needs)]
    return present + cheap


@dataclass
class Leaderboard:
    table: Any                      # one row per model, strategy, metric: mean, CI, rank, direction
    samples: Any = field(repr=False)  # the rows it was built from
    runs: list[dict[str, Any]]
    capacities: dict[str, dict[str, float] | None]
    metrics: list[str]
    confidence: float
    #: the per-sample columns the runs' strategies declare (run.json ``columns``)
    strategy_columns: list[Column] = field(default_factory=list)
    #: per model and strategy: tok/s over timing repeats, latency p50/p95, computed/generated
    costs: Any = None

    def models(self) -> list[str]:
        return sorted(self.table["model"].unique()) if len(self.table) else []


def _strategy_keys(df: Any) -> Any:
    """A label per strategy config; a label used by several configs across runs gets its id."""
    ids_per_label = df.groupby("strategy_label")["strategy_id"].nunique()
    clash = set(ids_per_label[ids_per_label > 1].index)
    return df.apply(lambda r: f"{r['strategy_label']} [{r['strategy_id'][:6]}]" if r["strategy_label"] in clash
                    else r["strategy_label"], axis=1) if clash else df["strategy_label"]


def build_leaderboard(reports: Iterable[Path | str], metrics: Sequence[str] | None = None, *,
                      n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
                      execute_code: bool = False) -> Leaderboard:

    run_dirs = expand_reports(reports)
    runs = [read_run_json(d) | {"_dir": str(d)} for d in run_dirs]
    df = read_samples(run_dirs)
    if metrics is None:
        metrics = default_leaderboard_metrics(df)
    else:
        unknown = [m for m in metrics if m not in METRICS and m not in df.columns]
        if unknown:
            raise ValueError(f"--metrics: unknown metric(s) {unknown}; known: {', '.join(METRICS.names())}")
    df = rescore_missing(df, metrics, execute_code=execute_code)
    df["strategy_key"] = _strategy_keys(df)
    declared = [c for c in strategy_columns(runs) if c.leaderboard and c.name in df.columns
                and df[c.name].notna().any() and c.name not in metrics]
    cols = list(metrics) + [c.name for c in declared]
    table = summary(df, cols, group=("model", "strategy_key"), n_boot=n_boot, confidence=confidence, seed=seed,
                    directions={c.name: c.direction for c in declared})
    table = _timing_intervals(table, df, confidence)
    table = table.rename(columns={"strategy_key": "strategy"})
    table["rank"] = math.nan
    for (_, metric), g in table.groupby(["model", "metric"]):
        direction = g["direction"].iloc[0]
        if direction == "none":
            continue
        table.loc[g.index, "rank"] = g["mean"].rank(ascending=(direction == "lower"), method="min")
    capacities: dict[str, Any] = {}
    for r in runs:
        for name, cap in run_capacities(r).items():
            capacities.setdefault(name, cap)
    costs = cost_table(df, ("model", "strategy_key"), confidence).rename(columns={"strategy_key": "strategy"})
    return Leaderboard(table=table, samples=df, runs=runs, capacities=capacities, metrics=list(cols),
                       confidence=confidence, strategy_columns=declared, costs=costs)


def _timing_intervals(table: Any, df: Any, confidence: float) -> Any:
    """Timing metrics get their interval from the timing repeats, not from prompts (a unit's
    rows share one timing, so a prompt bootstrap would give a zero-width interval); with one
    timing per unit the interval is NaN and shown as 'no CI', as it is for a metric with one
    value per unit (``Metric.per_unit``). ``ci`` names the interval kind."""
    table = table.copy()
    table["ci"] = "prompts"
    for i, r in table[table["metric"].isin(TIMING_METRICS)].iterrows():
        g = df[(df["model"] == r["model"]) & (df["strategy_key"] == r["strategy_key"])]
        ci = t_interval(repeat_values(g, r["metric"]), confidence)
        table.loc[i, ["mean", "ci_low", "ci_high", "ci"]] = [ci.mean, ci.low, ci.high,
                                                              f"timing repeats ({ci.repeats})"]
    # a set-level metric (MAUVE) has one value per unit, repeated on its rows: no interval
    per_unit = table["metric"].map(lambda m: m in METRICS and METRICS.get(m).per_unit)
    table.loc[per_unit, ["ci_low", "ci_high"]] = math.nan
    table.loc[per_unit, "ci"] = "one value per unit"
    return table


def strategy_columns(runs: Sequence[dict[str, Any]]) -> list[Column]:
    """The per-sample columns the runs' strategies declared, as their run.json records them
    (plain data: no strategy code is imported); the built-ins' for runs that predate it."""
    groups = []
    for r in runs:
        sample, _ = columns_from_meta(r.get("columns")) if "columns" in r else builtin_columns()
        groups.append(sample)
    try:
        return union_columns(groups, "per-sample column")
    except ValueError:  # runs that disagree on a column: trust none of the declarations
        return []


# ---- rendering --------------------------------------------------------------------------------

def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    av = abs(v)
    if av >= 100:
        return f"{v:.1f}"
    if av >= 10:
        return f"{v:.2f}"
    return f"{v:.{digits}f}"


def _cell(r: Any) -> str:
    rank = "" if math.isnan(r["rank"]) else f" #{int(r['rank'])}"
    if isinstance(r["ci_low"], float) and math.isnan(r["ci_low"]) and not math.isnan(r["mean"]):
        return f"{_fmt(r['mean'])} [no CI]{rank}"
    return f"{_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]{rank}"


def cost_view(lb: Leaderboard, model: str) -> Any:
    """The cost section of one model: tok/s [CI over timing repeats], repeats, latency
    p50/p95, computed per generated token; the engines' start and warm-up are in none of them."""
    import pandas as pd
    c = lb.costs[lb.costs["model"] == model] if lb.costs is not None and len(lb.costs) else None
    if c is None or c.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "strategy": c["strategy"],
        "tok/s [CI over repeats]": [f"{_fmt(m)} [no CI]" if math.isnan(lo) else f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]"
                                    for m, lo, hi in zip(c["tok_per_s"], c["tok_per_s_low"], c["tok_per_s_high"])],
        "timings": c["timing_repeats"], "latency p50 s": c["latency_p50_s"].map(_fmt),
        "latency p95 s": c["latency_p95_s"].map(_fmt), "computed/generated": c["computed_per_generated"].map(_fmt),
    }).set_index("strategy")


def engine_costs_line(lb: Leaderboard, model: str) -> str:
    """The engines' own costs from run.json (start, warm-up): reported beside, never in a unit."""
    engines = [e for r in lb.runs for e in ((r.get("models") or {}).get(model) or {}).get("engine_costs") or []
               if isinstance(e, dict)]
    if not engines:
        return "engines: start and warm-up not recorded"
    load = sum(float(e.get("load_seconds") or 0) for e in engines)
    warm = sum(float(e.get("warmup_seconds") or 0) for e in engines)
    return (f"engines: {len(engines)}, started in {load:.1f} s and warmed up in {warm:.1f} s in all; "
            f"no unit is charged for either")


COST_NOTE = ("Cost: every unit starts from an empty prefix cache and is timed after its engine's warm-up; "
             "tok/s has an interval only when units were timed more than once (generation.timing_repeats).")


def wide_table(lb: Leaderboard, model: str) -> Any:
    """Strategies x metrics for one model, cells 'mean [low, high] #rank'; strategies ordered
    by their rank on the first quality metric present."""
    import pandas as pd
    t = lb.table[lb.table["model"] == model]
    if t.empty:
        return pd.DataFrame()
    cells = t.assign(cell=t.apply(_cell, axis=1)).pivot(index="strategy", columns="metric", values="cell")
    cells = cells[[m for m in lb.metrics if m in cells.columns]]
    order_metric = next((m for m in QUALITY_METRICS if m in cells.columns), None)
    if order_metric:
        ranks = t[t["metric"] == order_metric].set_index("strategy")["rank"]
        cells = cells.loc[sorted(cells.index, key=lambda s: (ranks.get(s, math.inf), s))]
    return cells.fillna("")


def best_table(lb: Leaderboard, model: str) -> Any:
    import pandas as pd
    t = lb.table[(lb.table["model"] == model) & (lb.table["rank"] == 1)]
    rows = []
    for m in lb.metrics:
        g = t[t["metric"] == m]
        if g.empty:
            continue
        rows.append({"metric": m, "direction": g["direction"].iloc[0], "best": ", ".join(g["strategy"]),
                     "mean [CI]": f"{_fmt(g['mean'].iloc[0])} [{_fmt(g['ci_low'].iloc[0])}, {_fmt(g['ci_high'].iloc[0])}]"})
    return pd.DataFrame(rows)


def _capacity_line(cap: dict[str, float] | None) -> str:
    if not cap:
        return "capacity: unknown (no architecture in run.json)"
    return (f"capacity (seed formulas, m = {cap['m']:g}): total possibilities (m*h)^n = 10^{cap['log10_possibilities']:.1f}, "
            f"dependency length n*ln(m*h)/ln(V) = {cap['dependency_length']:.2f} tokens")


def md_escape(text: Any) -> str:
    """``text`` as literal Markdown, safe in a table cell or a heading: ``\\``, ``|`` and
    backticks are backslash-escaped, ``&``, ``<`` and ``>`` become entities (so no raw HTML
    gets through), ``](`` becomes ``]\\(`` (no link or image), and newlines, tabs and other
    control characters become spaces."""
    text = _MD_SPECIAL_RE.sub(lambda m: _MD_SPECIAL[m.group()], _CONTROL_RE.sub(" ", str(text)))
    return text.replace("](", "]\\(")


def _table_rows(df: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a table as strings; a named index becomes the first column."""
    if df.index.name:
        cols = [df.index.name] + [str(c) for c in df.columns]
        return cols, [[str(i)] + [str(v) for v in r] for i, r in zip(df.index, df.itertuples(index=False))]
    return [str(c) for c in df.columns], [[str(v) for v in r] for r in df.itertuples(index=False)]


def _md_table(df: Any) -> str:
    if df is None or df.empty:
        return "_(no data)_"
    cols, rows = _table_rows(df)
    return "\n".join(["| " + " | ".join(md_escape(c) for c in cols) + " |", "|" + "---|" * len(cols),
                      *("| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows)])


def _html_table(df: Any, css_class: str) -> str:
    if df is None or df.empty:
        return "<p><em>(no data)</em></p>"
    cols, rows = _table_rows(df)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    return (f"<table class=\"{html.escape(css_class)}\">\n<thead><tr>{head}</tr></thead>\n"
            f"<tbody>\n{body}\n</tbody>\n</table>")


def csv_safe(df: Any) -> Any:
    """A copy of ``df`` whose string cells that start like a formula (``=``, ``+``, ``-``,
    ``@``, tab, CR) begin with ``'``, so a spreadsheet shows them as text. Numeric columns are
    left alone: a negative mean stays a number."""
    import pandas as pd
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_numeric_dtype(out[col]):
            continue
        out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v)
    return out


def _runs_line(lb: Leaderboard) -> str:
    return ", ".join(f"{r.get('run_id')} ({r.get('status', '?')})" for r in lb.runs)


def to_markdown(lb: Leaderboard) -> str:
    pct = int(round(lb.confidence * 100))
    out = [f"# Decoding-strategy leaderboard", "",
           f"Runs: {md_escape(_runs_line(lb))}. Cells: mean over prompts [{pct}% bootstrap CI over prompts] #rank "
           f"(rank 1 is best in the metric's direction; metrics without a direction are not ranked); "
           f"timing metrics ({', '.join(TIMING_METRICS)}): mean over timing repeats [{pct}% t interval over the "
           f"repeats], 'no CI' when each unit was timed once.", ""]
    for model in lb.models():
        out += [f"## {md_escape(model)}", "", _capacity_line(lb.capacities.get(model)), "", "### Best per metric", "",
                _md_table(best_table(lb, model)), "", "### All strategies", "", _md_table(wide_table(lb, model)), "",
                "### Cost", "", md_escape(COST_NOTE), "", md_escape(engine_costs_line(lb, model)), "",
                _md_table(cost_view(lb, model)), ""]
    return "\n".join(out)


# ---- plots ------------------------------------------------------------------------------------

def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when both coordinates are maximised, by x."""
    idx = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    front = [i for i in idx if not any(points[j][0] >= points[i][0] and points[j][1] >= points[i][1]
                                       and points[j] != points[i] for j in idx)]
    return sorted(front, key=lambda i: points[i][0])


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _means(lb: Leaderboard, model: str, metric: str) -> dict[str, float]:
    t = lb.table[(lb.table["model"] == model) & (lb.table["metric"] == metric)]
    return dict(zip(t["strategy"], t["mean"]))


def quality_metric(lb: Leaderboard, model: str) -> str | None:
    """The quality metric of the quality/diversity plot: the one of QUALITY_METRICS that
    covers the most prompts (ties: the earlier in QUALITY_METRICS)."""
    t = lb.table[(lb.table["model"] == model) & lb.table["metric"].isin(QUALITY_METRICS)]
    if t.empty:
        return None
    cover = t.groupby("metric")["n_prompts"].max()
    return max(cover.index, key=lambda m: (cover[m], -QUALITY_METRICS.index(m)))


def plots(lb: Leaderboard, model: str) -> list[tuple[str, str]]:
    """(title, base64 PNG) for one model: quality vs diversity with the Pareto front, cost per
    strategy, and one bar chart per column a strategy declared for the leaderboard (a lookahead's
    possibilities consumed, ...) that the report has."""
    import matplotlib
    matplotlib.use("Agg", force=True)

    with matplotlib.rc_context({"text.usetex": False}):  # tick numbers too: no TeX
        return _plots(lb, model)


def _barh(ax: Any, values: dict[str, float], color: str) -> None:
    """Horizontal bars, one per label, sorted; the labels are plain text."""
    names = sorted(values)
    ax.barh(range(len(names)), [values[s] for s in names], color=color)
    ax.set_yticks(range(len(names)), labels=names, **PLAIN_TEXT)


def _plots(lb: Leaderboard, model: str) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    quality = quality_metric(lb, model)
    div = _means(lb, model, "diversity")
    if quality and div:
        q = _means(lb, model, quality)
        names = [s for s in q if s in div]
        pts = [(div[s], q[s]) for s in names]
        front = pareto_front(pts)
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue")
        for s, (x, y) in zip(names, pts):
            ax.annotate(s, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points", **PLAIN_TEXT)
        if front:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-o", color="tab:red", label="Pareto front")
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel("diversity (higher is better)", **PLAIN_TEXT)
        ax.set_ylabel(f"{quality} (higher is better)", **PLAIN_TEXT)
        ax.set_title(f"{model}: quality against diversity", **PLAIN_TEXT)
        out.append((f"Quality ({quality}) against diversity, with the Pareto front", _png(fig)))
    costs = [(m, _means(lb, model, m)) for m in COST_METRICS if _means(lb, model, m)]
    if costs:
        fig, axes = plt.subplots(1, len(costs), figsize=(4.2 * len(costs), 0.35 * max(len(c[1]) for c in costs) + 1.6))
        axes = axes if len(costs) > 1 else [axes]
        for ax, (m, vals) in zip(axes, costs):
            _barh(ax, vals, "tab:green")
            ax.set_title(m, fontsize=9, **PLAIN_TEXT)
            ax.tick_params(labelsize=7)
        fig.suptitle(f"{model}: cost per strategy", **PLAIN_TEXT)
        out.append(("Cost per strategy", _png(fig)))
    for col in lb.strategy_columns:  # what the strategies declared for the leaderboard
        vals = _means(lb, model, col.name)
        if not vals:
            continue
        title = col.description or col.name
        fig, ax = plt.subplots(figsize=(6, 0.35 * len(vals) + 1.6))
        _barh(ax, vals, "tab:purple")
        ax.set_xlabel(f"{col.name} ({col.direction} is better)" if col.direction != "none" else col.name,
                      **PLAIN_TEXT)
        ax.set_title(f"{model}: {title}", **PLAIN_TEXT)
        out.append((title, _png(fig)))
    return out


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0;
font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
figure{margin:1em 0}figcaption{font-size:13px;color:#555}"""


def to_html(lb: Leaderboard, figures: Sequence[tuple[str, str]] = (), figures_heading: str = "") -> str:
    """The page; ``figures`` (title, base64 PNG) are added under ``figures_heading`` after the
    models (the tune's sensitivity plots)."""
    pct = int(round(lb.confidence * 100))
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<link rel=\"icon\" href=\"data:,\">", "<title>deceval leaderboard</title>",
             f"<style>{_CSS}</style></head><body>", "<h1>Decoding-strategy leaderboard</h1>",
             f"<p>Runs: {html.escape(_runs_line(lb))}. Cells: mean over prompts [{pct}% bootstrap CI] #rank "
             f"(rank 1 is best in the metric's direction); timing metrics ({', '.join(TIMING_METRICS)}): mean "
             f"over timing repeats [{pct}% t interval], 'no CI' when each unit was timed once.</p>"]
    for model in lb.models():
        parts += [f"<h2>{html.escape(model)}</h2>", f"<p class=\"capacity\">{html.escape(_capacity_line(lb.capacities.get(model)))}</p>",
                  "<h3>Best per metric</h3>", _html_table(best_table(lb, model), "best"),
                  "<h3>All strategies</h3>", _html_table(wide_table(lb, model), "all"),
                  "<h3>Cost</h3>", f"<p>{html.escape(COST_NOTE)} {html.escape(engine_costs_line(lb, model))}</p>",
                  _html_table(cost_view(lb, model), "cost")]
        for title, b64 in plots(lb, model):
            parts.append(f"<figure><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{b64}\">"
                         f"<figcaption>{html.escape(title)}</figcaption></figure>")
    if figures:
        parts.append(f"<h2>{html.escape(figures_heading or 'Figures')}</h2>")
    for title, b64 in figures:
        parts.append(f"<figure><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{b64}\">"
                     f"<figcaption>{html.escape(title)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_leaderboard(lb: Leaderboard, out_dir: Where | str, html_page: bool = True,
                      figures: Sequence[tuple[str, str]] = (), figures_heading: str = "") -> dict[str, Where]:
    """Write leaderboard.md, leaderboard.csv (the long table, formula-safe: ``csv_safe``) and
    leaderboard.html (with ``figures`` after the models, see ``to_html``) into out_dir, a
    folder or a URI (each file written whole: renamed into place, or uploaded once)."""
    out = locate(out_dir, "--out")
    paths = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv"}
    write_text_atomic(paths["markdown"], to_markdown(lb))
    write_text_atomic(paths["csv"], csv_safe(lb.table).to_csv(index=False))
    if html_page:
        paths["html"] = out / "leaderboard.html"
        write_text_atomic(paths["html"], to_html(lb, figures, figures_heading))
    return paths

"""Plain-text tables: the run summary printed after ``deceval run``, and the table
layout the CLI prints everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.analysis.cost import cost_table
from harness.report import read_samples


def summarize(run_dir: Path) -> "Any":
    """Per model and strategy: samples, errors, mean generated tokens, accuracy, and cost:
    tokens/s (warm-up excluded, each unit from an empty cache), per-sample latency p50/p95 and
    engine-computed tokens per generated token (harness.analysis.cost)."""
    import pandas as pd
    df = read_samples(run_dir)
    costs = cost_table(df, ("model", "strategy_label")).set_index(["model", "strategy_label"])
    rows = []
    for (model, label), g in df.groupby(["model", "strategy_label"], sort=True):
        ok = g[g["error"].isna()]
        acc = ok["contains_answer"].dropna() if "contains_answer" in ok else pd.Series(dtype=float)
        c = costs.loc[(model, label)]
        rows.append({
            "model": model, "strategy": label, "samples": len(g), "errors": int(g["error"].notna().sum()),
            "mean_gen_tokens": round(float(ok["completion_tokens"].mean()), 1) if len(ok) else None,
            "accuracy": round(float(acc.mean()), 3) if len(acc) else None,
            "gen_tok_per_s": _round(c["tok_per_s"], 1), "lat_p50_s": _round(c["latency_p50_s"], 2),
            "lat_p95_s": _round(c["latency_p95_s"], 2), "computed_per_gen": _round(c["computed_per_generated"], 2),
        })
    return pd.DataFrame(rows)


def _round(v: float, digits: int) -> float | None:
    return None if v is None or v != v else round(float(v), digits)


def format_table(df) -> str:
    cols = list(df.columns)
    cells = [[("" if v is None or (isinstance(v, float) and v != v) else str(v)) for v in r] for r in df.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([line, sep, *body])


def _numeric(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False

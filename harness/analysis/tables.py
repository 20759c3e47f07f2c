"""Plain-text tables: the run summary printed after ``deceval run``, and the table
layout the CLI prints everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.report import read_samples


def summarize(run_dir: Path) -> "Any":
    """Per model and strategy: samples, errors, mean generated tokens, accuracy, tokens/s."""
    import pandas as pd
    df = read_samples(run_dir)
    rows = []
    for (model, label), g in df.groupby(["model", "strategy_label"], sort=True):
        ok = g[g["error"].isna()]
        unit_time = g.groupby("unit_id")["unit_seconds"].first().sum()
        acc = ok["contains_answer"].dropna() if "contains_answer" in ok else pd.Series(dtype=float)
        rows.append({
            "model": model, "strategy": label, "samples": len(g), "errors": int(g["error"].notna().sum()),
            "mean_gen_tokens": round(float(ok["completion_tokens"].mean()), 1) if len(ok) else None,
            "accuracy": round(float(acc.mean()), 3) if len(acc) else None,
            "gen_tok_per_s": round(float(ok["completion_tokens"].sum() / unit_time), 1) if unit_time else None,
        })
    return pd.DataFrame(rows)


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

"""Cost metrics: generated tokens per second, per-sample latency, engine work per
generated token. Machine dependent: shown on leaderboards, never gated by default."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.metrics.core import is_missing, is_error, register_metric

# ---- cost metrics -----------------------------------------------------------------------------

@register_metric("gen_tokens_per_s", higher_is_better=True, batch=True, unit="tok/s",
                 description="generated tokens of the unit / unit_seconds (the same value on each of its rows)")
def gen_tokens_per_s(rows: list[dict[str, Any]]) -> list[float | None]:
    by_unit: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_unit[r.get("unit_id")].append(i)
    out: list[float | None] = [None] * len(rows)
    for idx in by_unit.values():
        secs = next((rows[i].get("unit_seconds") for i in idx if rows[i].get("unit_seconds")), None)
        if not secs:
            continue
        rate = sum(rows[i].get("completion_tokens") or 0 for i in idx if not is_error(rows[i])) / secs
        for i in idx:
            out[i] = rate
    return out


@register_metric("sample_latency_s", higher_is_better=False, unit="s",
                 description="latency of one sample, from queueing to its last token (the latency_s column)")
def sample_latency_s(row: dict[str, Any]) -> float | None:
    v = row.get("latency_s")
    return None if is_missing(v) else float(v)


@register_metric("computed_per_generated", higher_is_better=False,
                 description="engine-computed tokens (uncached prompt + generated, lookahead included) "
                             "per generated token")
def computed_per_generated(row: dict[str, Any]) -> float | None:
    c, g = row.get("computed_tokens"), row.get("completion_tokens")
    if is_missing(c) or is_missing(g) or not g:
        return None
    return float(c) / float(g)

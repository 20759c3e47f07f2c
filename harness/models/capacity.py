"""The seed paper's capacity formulas, per model, in log space.

Total possibilities P = (m * h)^n and dependency length L = log_V P = n * ln(m * h) / ln(V),
with h the hidden size, n the number of layers, V the vocabulary size (em_size) and m the
per-layer possibility count per hidden unit. P overflows any float for real models
(SmolLM2-135M: about 10^90), so we report ln P and log10 P, never P itself.

Default m = 2: each hidden unit of a layer is counted as active or not (two states), the
smallest count that makes a layer contribute more than h possibilities. Pass another m
to :func:`model_capacity` when comparing to a paper that states one.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

DEFAULT_M = 2.0


def capacity(hidden_size: int, num_hidden_layers: int, vocab_size: int, m: float = DEFAULT_M) -> dict[str, float]:
    """ln and log10 of the total possibilities (m*h)^n, and the dependency length n*ln(m*h)/ln(V)."""
    for name, val, low in (("hidden_size", hidden_size, 1), ("num_hidden_layers", num_hidden_layers, 1),
                           ("vocab_size", vocab_size, 2)):
        if not isinstance(val, (int, float)) or isinstance(val, bool) or val < low:
            raise ValueError(f"{name} must be a number >= {low}, got {val!r}")
    if not isinstance(m, (int, float)) or m <= 0 or m * hidden_size <= 1:
        raise ValueError(f"m must be > 0 with m * hidden_size > 1, got m={m!r} (hidden_size={hidden_size})")
    ln_p = num_hidden_layers * math.log(m * hidden_size)
    return {"m": float(m), "ln_possibilities": ln_p, "log10_possibilities": ln_p / math.log(10),
            "dependency_length": ln_p / math.log(vocab_size)}


def model_capacity(architecture: Mapping[str, Any] | None, m: float = DEFAULT_M) -> dict[str, float] | None:
    """From run.json's ``models.<name>.architecture`` ({hidden_size, num_hidden_layers,
    vocab_size}); None when it is missing or incomplete."""
    if not architecture:
        return None
    try:
        return capacity(architecture["hidden_size"], architecture["num_hidden_layers"], architecture["vocab_size"], m)
    except (KeyError, TypeError, ValueError):
        return None


def run_capacities(run_meta: Mapping[str, Any], m: float = DEFAULT_M) -> dict[str, dict[str, float] | None]:
    """Per model of a run.json: its stored ``capacity``, else computed from its architecture."""
    out = {}
    for name, info in (run_meta.get("models") or {}).items():
        out[name] = info.get("capacity") or model_capacity(info.get("architecture"), m)
    return out

"""Metrics: each carries its direction and aggregation, so leaderboards and the
regression gate never guess which way is better.

A metric is computed per sample (a float, or None when it does not apply, e.g. a
reference metric on a prompt without reference) and aggregated per unit.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from harness.registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[dict[str, Any]], float | None]
    higher_is_better: bool
    description: str
    aggregation: str = "mean"
    #: what it needs: "reference", "samples" (several per prompt), "scorer" (a model)
    needs: frozenset[str] = field(default_factory=frozenset)
    default: bool = True


METRICS: Registry = Registry("metric")


def register_metric(name: str, *, higher_is_better: bool, description: str, aggregation: str = "mean",
                    needs: Sequence[str] = (), default: bool = True):
    def decorator(fn: Callable[[dict[str, Any]], float | None]):
        METRICS.register(name, Metric(name, fn, higher_is_better, description, aggregation, frozenset(needs), default))
        return fn
    return decorator


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze spaces (SQuAD-style)."""
    text = _PUNCT.sub(" ", text.lower())
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _answers(row: dict[str, Any]) -> list[str]:
    return [a for a in [row.get("reference"), *(row.get("aliases") or [])] if a not in (None, "")]


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line
    return ""


@register_metric("exact_match", higher_is_better=True, needs=["reference"],
                 description="first non-empty line of the completion equals the reference (normalised)")
def exact_match(row: dict[str, Any]) -> float | None:
    answers = _answers(row)
    if not answers or row.get("completion") is None:
        return None
    got = normalize_answer(_first_line(row["completion"]))
    return float(any(got == normalize_answer(a) for a in answers))


@register_metric("contains_answer", higher_is_better=True, needs=["reference"],
                 description="the reference appears as whole words in the completion's first line (normalised)")
def contains_answer(row: dict[str, Any]) -> float | None:
    answers = _answers(row)
    if not answers or row.get("completion") is None:
        return None
    got = f" {normalize_answer(_first_line(row['completion']))} "
    return float(any(f" {normalize_answer(a)} " in got for a in answers if normalize_answer(a)))


def default_metrics() -> list[str]:
    return [n for n in METRICS.names() if METRICS.get(n).default]


def score_rows(rows: list[dict[str, Any]], names: Sequence[str]) -> None:
    """Fill each row's metric columns in place (None for error rows)."""
    metrics = [METRICS.get(n) for n in names]
    for row in rows:
        for m in metrics:
            row[m.name] = None if row.get("error") else m.fn(row)

"""Task metrics: answers against references (exact, contained, numeric) and code that
passes its tests (pass@k, run in :mod:`harness.metrics.sandbox`)."""

from __future__ import annotations

import math
import re
import string
from collections import defaultdict
from fractions import Fraction
from typing import Any, Callable

from harness.metrics.core import is_missing, register_metric
from harness.metrics.sandbox import humaneval_passed
from harness.tasks.extract import ANSWER_NORMALISATION, row_answer
from harness.tasks.extract import exact_match as lm_eval_exact_match
from harness.tasks.lm_eval_bridge import marked_task

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze spaces (SQuAD-style)."""
    text = _PUNCT.sub(" ", text.lower())
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _answers(row: dict[str, Any]) -> list[str]:
    aliases = row.get("aliases")
    aliases = [] if aliases is None else list(aliases)
    return [a for a in [row.get("reference"), *aliases] if not is_missing(a) and a != ""]


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line
    return ""


@register_metric("exact_match", higher_is_better=True, needs=["reference"],
                 description="first non-empty line of the completion equals the reference (normalised); with the "
                             "prompt set's answer extractor: the extracted answer equals it under lm-eval's GSM8K "
                             "exact_match settings (no ',', '$' or final '.', any case); on an lm_eval_task's rows: "
                             "lm-eval's own exact_match of the task (its filters, its metric settings)")
def exact_match(row: dict[str, Any]) -> float | None:
    if marked_task(row.get("extractor")) is not None:
        # an lm-eval task's row: the task's own value (score_rows put it there), None when the
        # task does not compute exact_match or the row was not scored
        scored = row.get("_lm_eval")
        return None if scored is None else scored.metrics.get("exact_match")
    answers = _answers(row)
    if not answers or not isinstance(row.get("completion"), str):
        return None
    if not is_missing(row.get("extractor")) and row.get("extractor") != "":
        # the same answer score_rows puts in the row's extracted column; surrounding spaces never count
        got = row_answer(row)
        return lm_eval_exact_match(None if got is None else got.strip(), [str(a).strip() for a in answers],
                                   **ANSWER_NORMALISATION)
    got = normalize_answer(_first_line(row["completion"]))
    return float(any(got == normalize_answer(a) for a in answers))


@register_metric("contains_answer", higher_is_better=True, needs=["reference"],
                 description="the reference appears as whole words in the completion's first line (normalised)")
def contains_answer(row: dict[str, Any]) -> float | None:
    answers = _answers(row)
    if not answers or not isinstance(row.get("completion"), str):
        return None
    got = f" {normalize_answer(_first_line(row['completion']))} "
    return float(any(f" {normalize_answer(a)} " in got for a in answers if normalize_answer(a)))


_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|(?<![\w.])[-\u2212]?\.\d+")
_LATEX_FRAC = re.compile(r"\\d?frac\{(-?\d+)\}\{(\d+)\}")


def parse_number(text: str) -> Fraction | None:
    """A number written as ``-1,234.5``, ``3/4``, ``$\\dfrac{3}{4}$``; None when there is none."""
    text = _LATEX_FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    m = _NUMBER.search(text)
    return _to_fraction(m.group(0)) if m else None


def _to_fraction(tok: str) -> Fraction | None:
    tok = tok.replace(",", "").replace("\u2212", "-").replace(" ", "")
    try:
        return Fraction(tok)
    except (ValueError, ZeroDivisionError):
        return None


def _last_number(text: str) -> Fraction | None:
    text = _LATEX_FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    found = [_to_fraction(t) for t in _NUMBER.findall(text)]
    found = [f for f in found if f is not None]
    return found[-1] if found else None


@register_metric("numeric_match", higher_is_better=True, needs=["reference"],
                 description="the last number in the completion's first line equals a numeric reference "
                             "(relative tolerance 1e-6); None when the reference is not a number")
def numeric_match(row: dict[str, Any]) -> float | None:
    if not isinstance(row.get("completion"), str):
        return None
    refs = [r for r in (parse_number(a) for a in _answers(row) if _NUMBER.fullmatch(str(a).strip())
                        or _LATEX_FRAC.search(str(a))) if r is not None]
    if not refs:
        return None
    got = _last_number(_first_line(row["completion"]))
    if got is None:
        return 0.0
    return float(any(abs(got - r) <= Fraction(1, 10**6) * max(1, abs(r)) for r in refs))


@register_metric("pass_at_1", higher_is_better=True, needs=["code"], batch=True,
                 description="HumanEval: the completion passes the task's unit tests, run in the bubblewrap "
                             "sandbox with a timeout (a pass is a token printed after the tests return, never an "
                             "exit status); its mean over samples is pass@1. None on rows that are not the "
                             "humaneval set's tasks (prompt set and prompt hash)")
def pass_at_1(rows: list[dict[str, Any]]) -> list[float | None]:
    """Raises harness.metrics.sandbox.SandboxUnavailable when a row would run code and bwrap cannot."""
    return [None if p is None else float(p) for p in humaneval_passed(rows)]


def pass_at_k_estimate(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator of Chen et al. 2021: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _pass_at_k(k: int) -> Callable[[list[dict[str, Any]]], list[float | None]]:
    def fn(rows: list[dict[str, Any]]) -> list[float | None]:
        passed = humaneval_passed(rows)
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, (r, p) in enumerate(zip(rows, passed)):
            if p is not None:
                groups[(r.get("prompt_id"), r.get("base_seed"))].append(i)
        out: list[float | None] = [None] * len(rows)
        for idx in groups.values():
            if len(idx) < k:
                continue
            est = pass_at_k_estimate(len(idx), sum(bool(passed[i]) for i in idx), k)
            for i in idx:
                out[i] = est
        return out
    return fn


for _k in (5, 10):
    register_metric(f"pass_at_{_k}", higher_is_better=True, needs=["code", "samples"], batch=True, default=False,
                    description=f"HumanEval pass@{_k} (unbiased estimator over a prompt's samples; needs "
                                f"samples_per_prompt >= {_k}); the same value on each of the prompt's rows")(_pass_at_k(_k))

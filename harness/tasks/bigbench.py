"""Benchmarks taken out of package archives on PyPI (:mod:`harness.tasks.archive`):
StrategyQA and TruthfulQA (multiple choice) from BIG-bench's task files in the ``bigbench``
1.0.0 source archive, and WritingBench's English queries from the ``inspect-evals`` 0.26.0
wheel. Each function reads the member file and returns prompt records {"id", "prompt",
"reference", "aliases"}.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from harness.errors import PromptError
from harness.tasks.archive import PackageArchive

_TASKS = "bigbench-1.0.0/bigbench/benchmark_tasks"
STRATEGYQA_MEMBER = f"{_TASKS}/strategyqa/task.json"
TRUTHFULQA_MC_MEMBER = f"{_TASKS}/truthful_qa/task_mc.json"

BIGBENCH = PackageArchive(
    dist="bigbench", version="1.0.0", size=358_249_635,
    url="https://files.pythonhosted.org/packages/95/f8/c019b3579df548a04cac12342cfcb878e50ddf6cfcd7fddba8cfc721c157/"
        "bigbench-1.0.0.tar.gz",
    sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
    members={STRATEGYQA_MEMBER: "60af9081fed20102fd8bb1e02dc7d9f12238efcba33e4c1a56b4d61cb6409803",
             TRUTHFULQA_MC_MEMBER: "89a0402a23d5873b0c2f427e851fca7ac420f8d08731e61be52e6cbf1a18a281"},
    # Seen 2026-12-06: the registry lists only bigbench 0.0.1 and refuses the 1.0.0 file (HTTP 403).
    withdrawn="the package registry no longer serves bigbench 1.0.0")

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


WRITINGBENCH_MEMBER = "inspect_evals/writingbench/benchmark_all.jsonl"
INSPECT_EVALS = PackageArchive(
    dist="inspect-evals", version="0.26.0", size=21_409_407,
    url="https://files.pythonhosted.org/packages/db/cf/95cdb0f9dcee2750a6a4516e233c92c16243017601ec400a9f95c04b752b/"
        "inspect_evals-0.26.0-py3-none-any.whl",
    sha256="b76d15813182807da141a0f06bb6f18a5f82d1f06291ec2633bb84cdf661f8d0",
    members={WRITINGBENCH_MEMBER: "6399939db8e24b56c0e8063b4bc4ac30d6828204257a564ce9dd6a01282eb782"})
#: CJK ideographs and punctuation, full-width forms: a query with any is not an English one
_CJK = re.compile(r"[\u3400-\u9fff\u3000-\u303f\uff00-\uffef]")


def writingbench_en_records(path: Path) -> list[dict[str, Any]]:
    """WritingBench's 542 English writing queries (of 1,000; the rest are Chinese), six
    domains, no references (its own scoring is a judge model's checklist)."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise PromptError(f"{path}: not WritingBench's JSONL ({exc.__class__.__name__}: {exc}); run "
                          f"`deceval tasks prepare writingbench_en` again") from None
    for r in records:
        if _CJK.search(r["query"]):
            continue
        out.append({"id": f"writingbench-{int(r['index']):04d}", "prompt": r["query"].strip(), "aliases": [],
                    "domain": r.get("domain1")})
    return out

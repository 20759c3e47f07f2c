"""Prompt sets: built-ins shipped in the package, and user JSONL or Parquet files.

Each prompt has a stable id (the file's ``id`` or ``<set>-<line number>``), its text, an
optional reference answer with aliases, and a content hash; a set has a hash over its
prompts so a report can say exactly what it was run on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from harness.config import PromptSetConfig, read_text_file
from harness.errors import PromptError

BUILTIN_SETS = {
    "facts": "Short factual questions with reference answers (Question/Answer format).",
    "open_ended": "Open-ended writing and explanation prompts, no references.",
    "tiny": "8 prompts (5 facts + 3 open-ended) for smoke tests.",
}


@dataclass(frozen=True)
class Prompt:
    id: str
    set: str
    text: str
    reference: str | None = None
    aliases: tuple[str, ...] = ()
    chat: bool = False
    # An invalid prompt (empty text, ...) is kept and becomes an error row, not a crash.
    error: str | None = None

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps([self.text, self.reference, list(self.aliases), self.chat]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PromptSet:
    name: str
    source: str
    prompts: tuple[Prompt, ...] = field(repr=False)

    @property
    def hash(self) -> str:
        h = hashlib.sha256()
        for p in self.prompts:
            h.update(f"{p.id}\0{p.hash}\n".encode())
        return h.hexdigest()[:16]

    @property
    def has_references(self) -> bool:
        return any(p.reference is not None for p in self.prompts)


def builtin_path(name: str) -> Path:
    return Path(str(resources.files("harness") / "data" / "prompts" / f"{name}.jsonl"))


def _records_from_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    text = read_text_file(path, "prompt file")
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                              f"JSON object like {{\"prompt\": \"...\", \"reference\": \"...\"}}") from None
        out.append((where, rec))
    return out


def _records_from_parquet(path: Path) -> list[tuple[str, dict[str, Any]]]:
    if not path.exists():
        raise PromptError(f"prompt file not found: {path} (check the path in prompt_sets)")
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise PromptError(f"{path}: cannot read as Parquet ({exc}); expected a Parquet file with a 'prompt' column") from None
    return [(f"{path}: row {i}", rec) for i, rec in enumerate(table.to_pylist())]


def _make_prompt(where: str, rec: Any, set_name: str, index: int, chat: bool) -> Prompt:
    if not isinstance(rec, dict):
        raise PromptError(f"{where}: expected a JSON object with a 'prompt' field, got {type(rec).__name__}")
    if "prompt" not in rec:
        raise PromptError(f"{where}: missing required field 'prompt' (fields found: {', '.join(sorted(rec)) or 'none'})")
    text = rec["prompt"]
    if not isinstance(text, str):
        raise PromptError(f"{where}: field 'prompt' must be a string, got {type(text).__name__}")
    pid = rec.get("id")
    pid = f"{set_name}-{index:04d}" if pid is None else str(pid)
    ref = rec.get("reference")
    if ref is not None and not isinstance(ref, (str, int, float)):
        raise PromptError(f"{where}: field 'reference' must be a string or number, got {type(ref).__name__}")
    aliases = rec.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, (str, int, float)) for a in aliases):
        raise PromptError(f"{where}: field 'aliases' must be a list of strings, got {aliases!r}")
    error = None
    if not text.strip():
        error = f"prompt {pid!r} ({where}) is empty; give it some text or remove it"
    return Prompt(id=pid, set=set_name, text=text, reference=None if ref is None else str(ref),
                  aliases=tuple(str(a) for a in aliases), chat=chat, error=error)


def load_prompt_set(cfg: PromptSetConfig) -> PromptSet:
    if cfg.path is None:
        if cfg.name not in BUILTIN_SETS:
            import difflib
            close = difflib.get_close_matches(cfg.name, BUILTIN_SETS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PromptError(f"unknown built-in prompt set {cfg.name!r}{hint} Built-ins: "
                              f"{', '.join(BUILTIN_SETS)}; or give 'path:' to a JSONL or Parquet file")
        path = builtin_path(cfg.name)
    else:
        path = Path(cfg.path)
    if path.suffix == ".parquet":
        records = _records_from_parquet(path)
    elif path.suffix in (".jsonl", ".json") or cfg.path is None:
        records = _records_from_jsonl(path)
    else:
        raise PromptError(f"prompt file {path}: unsupported extension {path.suffix!r}; expected .jsonl or .parquet")
    if not records:
        raise PromptError(f"prompt file {path} has no prompts; expected one JSON object per line with a 'prompt' field")
    prompts = [_make_prompt(where, rec, cfg.name, i, cfg.chat) for i, (where, rec) in enumerate(records)]
    seen: dict[str, int] = {}
    for p in prompts:
        seen[p.id] = seen.get(p.id, 0) + 1
    dups = sorted(k for k, v in seen.items() if v > 1)
    if dups:
        raise PromptError(f"prompt file {path}: duplicate ids {dups[:5]}; ids must be unique within a set")
    if cfg.limit:
        prompts = prompts[: cfg.limit]
    return PromptSet(name=cfg.name, source=str(path), prompts=tuple(prompts))

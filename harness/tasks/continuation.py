"""Open-ended continuation with human-written references: the prompt is the start of a human
text, the reference is how the human went on. Set-level metrics such as MAUVE
(:mod:`harness.metrics.mauve`) compare the distribution of a strategy's continuations with
that of the human ones.

The built-in ``pydoc_continuation`` task cuts the prose of Python's documentation topics
(``pydoc_data.topics``, which every CPython ships; PSF-2.0). The topics were read once from
CPython 3.11.7 by :func:`pydoc_documents` and are packaged as
``harness/data/tasks/pydoc_topics.jsonl.gz`` (one ``{"id": topic, "text": prose}`` per line,
checked against its SHA-256), so the task is the same whatever Python runs it.

How a document becomes prompts (:func:`continuation_records`): its words (whitespace
split) are cut into consecutive windows of ``prefix_words + reference_words`` words from
the first word on; in each window the first ``prefix_words`` words, joined by single
spaces, are the prompt and the next ``reference_words`` words the reference. A tail shorter
than a window is dropped. A prompt's id is ``<set>-<document id>-<window index, 2 digits>``:
it depends only on the document and the window sizes, never on the other documents.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from harness.errors import PromptError, excerpt
from harness.tasks.sources import records_from_jsonl

#: Words of a document's window that are the prompt ...
PREFIX_WORDS = 48
#: ... and the words after them that are the reference (the human continuation).
REFERENCE_WORDS = 64

_RULE = re.compile(r"[*=\-~^]+")


def topic_prose(text: str) -> str:
    """The prose paragraphs of one documentation topic, each on one line, separated by a
    blank line: headings (a line over a rule of ``*=-~^``), indented blocks (code examples,
    grammar) and tables (lines starting with ``+`` or ``|``) are left out."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines or any(ln[0].isspace() or ln[0] in "+|" for ln in lines):
            continue
        if len(lines) >= 2 and _RULE.fullmatch(lines[1].strip()):  # "Title\n=====" (and any text under it)
            lines = lines[2:]
        lines = [ln for ln in lines if not _RULE.fullmatch(ln.strip())]
        if lines:
            paragraphs.append(" ".join(ln.strip() for ln in lines))
    return "\n\n".join(paragraphs)


def pydoc_documents() -> list[dict[str, str]]:
    """The prose of this Python's documentation topics, one ``{"id", "text"}`` per topic in
    name order (how ``pydoc_topics.jsonl.gz`` was made, under CPython 3.11.7)."""
    from pydoc_data.topics import topics
    docs = [{"id": name, "text": topic_prose(topics[name])} for name in sorted(topics)]
    return [d for d in docs if d["text"]]


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PromptError(f"continuation task: {name} must be an integer >= 1, got {excerpt(value)}")
    return value


def continuation_records(documents: Iterable[tuple[str, Any]], *, set_name: str,
                         prefix_words: int = PREFIX_WORDS, reference_words: int = REFERENCE_WORDS) -> list[dict[str, Any]]:
    """Prompt records ``{"id", "prompt", "reference", "aliases", "document"}`` of the
    documents ``(where, {"id": ..., "text": ...})``, cut as the module says."""
    prefix_words = _positive("prefix_words", prefix_words)
    reference_words = _positive("reference_words", reference_words)
    window = prefix_words + reference_words
    out: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for where, doc in documents:
        if not isinstance(doc, dict):
            raise PromptError(f"{where}: expected a JSON object with 'id' and 'text', got {type(doc).__name__}")
        for key in ("id", "text"):
            if not isinstance(doc.get(key), str) or (key == "id" and not doc[key].strip()):
                raise PromptError(f"{where}: field {key!r} must be a non-empty string, got {excerpt(doc.get(key))}")
        doc_id = doc["id"]
        if doc_id in seen:
            raise PromptError(f"{where}: document id {doc_id!r} was already used at {seen[doc_id]}; ids must be "
                              f"unique, or two documents would give the same prompt ids")
        seen[doc_id] = where
        words = doc["text"].split()
        for k in range(len(words) // window):
            start = k * window
            out.append({"id": f"{set_name}-{doc_id}-{k:02d}",
                        "prompt": " ".join(words[start:start + prefix_words]),
                        "reference": " ".join(words[start + prefix_words:start + window]),
                        "aliases": [], "document": doc_id})
    if not out:
        raise PromptError(f"continuation task {set_name!r}: no document has {window} words "
                          f"({prefix_words} prefix + {reference_words} reference); give longer texts")
    return out


def pydoc_continuation_records(path: Path) -> list[dict[str, Any]]:
    """The ``pydoc_continuation`` task's prompt records from its packaged documents."""
    return continuation_records(records_from_jsonl(path), set_name="pydoc_continuation")

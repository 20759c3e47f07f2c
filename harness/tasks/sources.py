"""Where a task's records come from, and how a record becomes a prompt record.

Records are read from a local JSONL, Parquet or CSV file (:func:`read_records`) or from a
Hugging Face dataset, offline (:func:`records_from_hf`); each comes with where it was
found (``file:line`` or ``file: row N``), which every error names.

:func:`shape_records` then turns them into the records :mod:`harness.tasks.sets` makes
prompts of (``prompt``, ``reference``, ``id``, ``aliases``): the columns a ``fields``
mapping names, the prompt text from a :class:`Template` over any of the record's fields,
and ``fewshot`` solved examples put in front of each question.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import string
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pyarrow.parquet as pq

from harness.errors import PromptError, excerpt
from harness.files import read_text_file

#: The prompt fields a ``fields`` mapping may point at a column of the records.
FIELD_KEYS = ("prompt", "reference", "id", "aliases")
#: File name endings :func:`read_records` reads.
FILE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".parquet", ".csv")
#: Between the few-shot examples, and between them and the question (lm-eval's default).
FEWSHOT_DELIMITER = "\n\n"
#: Between a few-shot example's question and its reference (lm-eval's target delimiter).
TARGET_DELIMITER = " "

Record = tuple[str, Any]  # (where it was found, the record)


# ---- files ------------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; give a finite number or a string")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {excerpt(k)}; give each field once")
        out[k] = v
    return out


def _jsonl_text(path: Path) -> str:
    """The text of a JSONL file, gunzipped when its name ends in ``.gz``."""
    if path.suffix != ".gz":
        return read_text_file(path, "prompt file")
    if not path.is_file():
        raise PromptError(f"prompt file not found: {path} (check the path in prompt_sets)")
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise PromptError(f"{path}: cannot gunzip it ({exc}); expected gzip-compressed JSON Lines") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PromptError(f"{path}: line {line}: not valid UTF-8 (byte {data[exc.start]:#04x}); re-save it as UTF-8") from None


def records_from_jsonl(path: Path) -> list[Record]:
    text = _jsonl_text(path)
    out = []
    # JSONL lines end at "\n" only: str.splitlines would also split inside a string value
    # at U+2028, U+0085, \x1c ..., which JSON allows unescaped.
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                              f"JSON object like {{\"prompt\": \"...\", \"reference\": \"...\"}}") from None
        except ValueError as exc:  # NaN, a duplicate key, an int of more than 4300 digits
            raise PromptError(f"{where}: {excerpt(str(exc), 200, quote=False)}") from None
        except RecursionError:
            raise PromptError(f"{where}: JSON nested too deeply; a prompt record is one flat object") from None
        out.append((where, rec))
    return out


def records_from_parquet(path: Path) -> list[Record]:
    if not path.exists():
        raise PromptError(f"prompt file not found: {path} (check the path in prompt_sets)")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise PromptError(f"{path}: cannot read as Parquet ({exc}); expected a Parquet file with a 'prompt' column") from None
    return [(f"{path}: row {i}", rec) for i, rec in enumerate(table.to_pylist())]


def records_from_csv(path: Path) -> list[Record]:
    """The rows of a CSV file whose first line is a header naming the columns. Every value
    is text; an empty cell is None (CSV cannot tell the two apart)."""
    text = read_text_file(path, "prompt file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise PromptError(f"{path}: line 1: expected a header naming the columns (e.g. 'prompt,reference'), "
                              f"got {'an empty file' if header is None else 'an empty line'}; put the column names "
                              f"on the first line")
        names = [h.strip() for h in header]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup or "" in names:
            problem = f"duplicate column names {excerpt(dup)}" if dup else "an empty column name"
            raise PromptError(f"{path}: line 1: the header has {problem}; give each column a distinct name")
        out = []
        for values in reader:
            where = f"{path}:{reader.line_num}"
            if not values or not any(v.strip() for v in values):
                continue
            if len(values) != len(names):
                raise PromptError(f"{where}: {len(values)} values, but the header has {len(names)} columns "
                                  f"({excerpt(', '.join(names), quote=False)}); quote values that contain commas")
            out.append((where, {k: (v if v != "" else None) for k, v in zip(names, values)}))
    except csv.Error as exc:
        raise PromptError(f"{path}:{reader.line_num}: not valid CSV ({exc}); expected comma-separated values with "
                          f"a header line") from None
    return out


def read_records(path: Path) -> list[Record]:
    """The records of a ``.jsonl`` / ``.json`` (one object a line, optionally gzipped:
    ``.jsonl.gz``), ``.parquet`` or ``.csv`` file."""
    if path.suffix == ".parquet":
        return records_from_parquet(path)
    if path.suffix == ".csv":
        return records_from_csv(path)
    if path.suffix in (".jsonl", ".json") or path.name.endswith(".jsonl.gz"):
        return records_from_jsonl(path)
    raise PromptError(f"prompt file {path}: unsupported extension {path.suffix!r}; expected .jsonl, .jsonl.gz, .parquet or .csv")


# ---- Hugging Face datasets --------------------------------------------------------------------

@dataclass(frozen=True)
class HFDataset:
    """A Hugging Face dataset, loaded offline: ``datasets.load_dataset(path, name,
    data_files=..., split=...)``. ``path`` is a hub id already in the local cache, a local
    dataset folder, or a builder such as ``json`` / ``csv`` / ``parquet`` with ``data_files``."""

    path: str
    split: str = "train"
    #: the dataset's configuration (``main`` for gsm8k), if it has several
    name: str | None = None
    #: a file, a list of files or {split: files}, as load_dataset takes them
    data_files: Any = field(default=None, hash=False)

    @property
    def label(self) -> str:
        return f"hf_dataset {self.path!r}" + (f" ({self.name})" if self.name else "") + f" split {self.split!r}"


_OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


@contextmanager
def hf_offline(datasets_module: Any) -> Iterator[None]:
    """Hugging Face offline mode for one call: the environment variables, and the flags the
    imported ``datasets`` and ``huggingface_hub`` modules read from them when imported; all
    restored afterwards, so the rest of the process is left as it was."""
    saved_env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    config = getattr(datasets_module, "config", None)
    flags = [(m, a) for m, a in ((config, "HF_HUB_OFFLINE"), (config, "HF_DATASETS_OFFLINE"),
                                 (sys.modules.get("huggingface_hub.constants"), "HF_HUB_OFFLINE"))
             if m is not None and hasattr(m, a)]
    saved_flags = [getattr(m, a) for m, a in flags]
    os.environ.update({k: "1" for k in _OFFLINE_ENV})
    for m, a in flags:
        setattr(m, a, True)
    try:
        yield
    finally:
        for (m, a), v in zip(flags, saved_flags):
            setattr(m, a, v)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def records_from_hf(spec: HFDataset) -> list[Record]:
    """The rows of a Hugging Face dataset split, loaded in offline mode (HF_DATASETS_OFFLINE=1):
    from the local cache or local files only, never the network."""
    try:
        import datasets
    except ImportError:
        raise PromptError(f"{spec.label} needs the 'datasets' package: pip install -e '.[tasks]' (or pip install "
                          f"datasets); or save the data as a JSONL, Parquet or CSV file and give 'path:' "
                          f"instead") from None
    try:
        with hf_offline(datasets):
            ds = datasets.load_dataset(spec.path, spec.name, data_files=spec.data_files, split=spec.split)
    except Exception as exc:  # noqa: BLE001 - not in the cache, a missing file, a bad split: say which and how to fix it
        detail = excerpt(f"{type(exc).__name__}: {exc}", 300, quote=False)
        if spec.data_files is not None:
            raise PromptError(f"{spec.label}: cannot load its data_files {excerpt(spec.data_files, quote=False)} "
                              f"({detail}); check the paths and the builder (json, csv, parquet) in "
                              f"hf_dataset") from None
        raise PromptError(
            f"{spec.label} is not available offline ({detail}); datasets are loaded with HF_DATASETS_OFFLINE=1, "
            f"so download it once where there is network access (python -c \"import datasets; "
            f"datasets.load_dataset({spec.path!r}, {spec.name!r}, split={spec.split!r})\") into the Hugging Face "
            f"cache (HF_HOME), or give local files (hf_dataset: {{path: json, data_files: FILE}}), or save it as a "
            f"JSONL/Parquet/CSV file and give 'path:'") from None
    if not hasattr(ds, "__iter__") or isinstance(ds, Mapping):
        raise PromptError(f"{spec.label}: expected one split, got {type(ds).__name__}; give 'split:'")
    return [(f"{spec.label} row {i}", dict(rec)) for i, rec in enumerate(ds)]


# ---- templates --------------------------------------------------------------------------------

class Template:
    """A prompt template such as ``"Question: {question}\\nAnswer:"``: literal text and plain
    ``{field}`` placeholders, each filled with a field of the record. Nothing else: no
    attribute access (``{a.b}``), indexing (``{a[0]}``), conversion (``{a!r}``), format spec
    (``{a:>10}``) or positional ``{}``; ``{{`` and ``}}`` are literal braces. It is filled by
    plain concatenation, never ``str.format``, so a template cannot reach into a value."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:  # "Single '}' encountered", "expected '}' before end of string"
            raise PromptError(f"template {excerpt(text)}: {exc}; write placeholders as {{field}} and literal braces "
                              f"as {{{{ and }}}}") from None
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in parsed:
            if name is not None:
                shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                problem = None
                if name == "" or name.isdigit():
                    problem = "is positional"
                elif "." in name or "[" in name:
                    problem = "uses attribute access or indexing"
                elif conversion:
                    problem = "has a conversion (!r, !s, !a)"
                elif spec:
                    problem = "has a format spec"
                if problem:
                    raise PromptError(f"template {excerpt(text)}: placeholder {excerpt(shown, quote=False)} {problem}; "
                                      f"only plain placeholders naming a field of the records are allowed, like "
                                      f"{{question}}")
            parts.append((literal, name))
        self._parts = parts  # (literal text, the field after it or None)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields it names, in order, each once."""
        return tuple(dict.fromkeys(n for _, n in self._parts if n is not None))

    def render(self, rec: Mapping[str, Any], where: str) -> str:
        """The template filled from ``rec`` (None as an empty text); a field the record
        lacks is a PromptError naming ``where``, the field and the fields it has."""
        out = []
        for literal, name in self._parts:
            out.append(literal)
            if name is None:
                continue
            if name not in rec:
                raise PromptError(f"{where}: the template names field {name!r}, which this record lacks (fields "
                                  f"found: {_fields_found(rec)}); fix the template or the record")
            value = rec[name]
            out.append("" if value is None else str(value))
        return "".join(out)


def _fields_found(rec: Mapping[str, Any]) -> str:
    return excerpt(", ".join(sorted(map(str, rec))), 200, quote=False) or "none"


# ---- records -> prompt records -----------------------------------------------------------------

@dataclass(frozen=True)
class Shaping:
    """How records become prompt records: the ``fields`` mapping (prompt field -> column),
    the prompt ``template``, and ``fewshot`` examples (from ``fewshot_records``, or the
    first records of the set itself, which then leave the set)."""

    fields: Mapping[str, str] = field(default_factory=dict, hash=False)
    template: str | None = None
    fewshot: int = 0

    @property
    def identity(self) -> bool:
        """Records pass as they are (the plain prompt-file format)."""
        return not self.fields and self.template is None and not self.fewshot


def _mapped(where: str, rec: Mapping[str, Any], fields: Mapping[str, str], template: Template | None,
            keys: Sequence[str] = FIELD_KEYS) -> dict[str, Any]:
    """A record's prompt record: each prompt field of ``keys`` from its mapped column (a
    mapped column must be there; an unmapped field is taken from the column of its own name
    when there is one), the prompt from the template when there is one."""
    out: dict[str, Any] = {}
    for key in keys:
        if key == "prompt" and template is not None:
            out["prompt"] = template.render(rec, where)
            continue
        col = fields.get(key)
        if col is None:
            if key in rec:
                out[key] = rec[key]
            continue
        if col not in rec:
            raise PromptError(f"{where}: missing field {col!r} (fields.{key} maps it to the {key}; fields found: "
                              f"{_fields_found(rec)}); fix fields.{key} or the record")
        value = rec[col]
        out[key] = [value] if key == "aliases" and isinstance(value, str) else value
    return out


def _shot(where: str, rec: dict[str, Any], source: str) -> str:
    ref = rec.get("reference")
    if ref is None or (isinstance(ref, str) and not ref.strip()):
        raise PromptError(f"{where}: a few-shot example needs a reference (the answer shown after its question), "
                          f"this one has none; give it one, or take the examples from another file ({source})")
    text = rec.get("prompt")
    if not isinstance(text, str):
        raise PromptError(f"{where}: field 'prompt' of a few-shot example must be a string, got {type(text).__name__}")
    return f"{text}{TARGET_DELIMITER}{ref}"


def shape_records(records: Sequence[Record], shaping: Shaping, source: str,
                  fewshot_records: Sequence[Record] | None = None) -> list[tuple[int, str, Any]]:
    """``(index, where, prompt record)`` of each prompt of the set: mapped, templated and
    prefixed with the few-shot examples. ``index`` is the record's position in ``records``
    (the default prompt id counts from it, so ids do not move when examples are taken out).
    A record that is not a mapping is passed on for the prompt maker to reject."""
    if shaping.identity:
        return [(i, where, rec) for i, (where, rec) in enumerate(records)]
    template = None if shaping.template is None else Template(shaping.template)

    def mapped(where: str, rec: Any, keys: Sequence[str] = FIELD_KEYS) -> Any:
        return _mapped(where, rec, shaping.fields, template, keys) if isinstance(rec, dict) else rec

    n = shaping.fewshot
    own = fewshot_records is None
    pool = list(records if own else fewshot_records)
    if n > len(pool):
        raise PromptError(f"{source if own else 'fewshot_path'}: fewshot is {n}, but it has only {len(pool)} "
                          f"records; lower fewshot or give more examples")
    shots = []
    for where, rec in pool[:n]:
        rec = mapped(where, rec, ("prompt", "reference"))  # an example needs no id
        if not isinstance(rec, dict):
            raise PromptError(f"{where}: expected a JSON object with a 'prompt' field, got {type(rec).__name__}")
        shots.append(_shot(where, rec, source))
    prefix = "".join(s + FEWSHOT_DELIMITER for s in shots)
    start = n if own else 0
    if own and n and start >= len(records):
        raise PromptError(f"{source}: fewshot: {n} takes the first {n} records as examples, which leaves no prompts; "
                          f"give the examples in a file of their own (fewshot_path) or lower fewshot")
    out = []
    for i in range(start, len(records)):
        where, rec = records[i]
        rec = mapped(where, rec)
        if prefix and isinstance(rec, dict) and isinstance(rec.get("prompt"), str):
            rec = {**rec, "prompt": prefix + rec["prompt"]}
        out.append((i, where, rec))
    return out

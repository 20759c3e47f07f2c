"""Property-based tests: whatever a config or prompt file holds, loading it gives a valid
object or one of the project's clear errors (harness.errors.DecevalError), never another
exception, a traceback or a huge message.

Inputs start from the real configs in configs/*.yaml and from well-formed JSONL, then get
mutated: keys deleted, values swapped for other types, huge, negative or non-finite
numbers, duplicate keys, aliases, nesting, random bytes, truncation.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.config import (
    MAX_SAMPLES_PER_PROMPT,
    PromptSetConfig,
    RunConfig,
    load_config,
    planned_rows,
    resolve_config,
)
from harness.errors import DecevalError, PromptError
from harness.tasks import PromptSet, load_prompt_set

ROOT = Path(__file__).resolve().parent.parent
REAL_CONFIGS = {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "configs").glob("*.yaml"))}
#: An error lists at most ten problems of a few hundred characters each.
MAX_MESSAGE = 4000

#: Examples per property: sized for a few seconds on 2 cores; raise DECEVAL_FUZZ_EXAMPLES for a longer search.
FUZZ = settings(max_examples=int(os.environ.get("DECEVAL_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# ---- checking an outcome ----------------------------------------------------------------------


def outcome(call):
    """``call()``'s result, or the DecevalError it raised after checking its message."""
    try:
        result = call()
    except DecevalError as exc:
        event(f"rejected: {type(exc).__name__}")
        msg = str(exc)
        assert msg.strip(), f"empty message from {type(exc).__name__}"
        assert len(msg) <= MAX_MESSAGE, f"{len(msg)}-character message: {msg[:300]}..."
        assert "Traceback" not in msg
        return exc
    event(f"accepted: {type(result).__name__}")
    return result


def check_config(result) -> None:
    if isinstance(result, DecevalError):
        return
    assert isinstance(result, RunConfig)
    assert result.models and result.prompt_sets and result.strategies and result.seeds
    assert len(result.run_id) <= 200 and "/" not in result.run_id
    for s in result.strategies:
        assert 1 <= s.samples_per_prompt <= MAX_SAMPLES_PER_PROMPT
        assert all(s.max_tokens <= m.engine.max_model_len for m in result.models)
        assert not any(isinstance(v, float) and not math.isfinite(v) for v in s.params.values())
    assert planned_rows(result, 1) >= 1


# ---- mutating configs -------------------------------------------------------------------------

WEIRD_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 10**9, 10**12, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["3", "1.5", "inf", "nan", "this:s", "json:dumps", "harness.config:excerpt", "x" * 5000,
                     "smollm2-135m", "greedy", "top_p", "facts", "a/b\x00c", "\u2028", "\ud800"]),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=4),
    st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=30),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=3),
)

#: Text spliced into a dumped config: YAML features and limits a config must not get past.
YAML_SNIPPETS = [
    "x: .inf\n", "x: .nan\n", "x: 1e999\n", "x: " + "1" * 5000 + "\n", "x: " + "[" * 200 + "]" * 200 + "\n",
    "x: &a [*a]\n", "x: !!python/object/apply:os.system ['echo hi']\n", "x: !!int abc\n",
    "x: !!timestamp 2020-13-45\n", "x: !!binary AAAA\n", "? [1, 2]\n: 3\n", "<<: *nowhere\n", "--- \n",
    "x: &b {c: 1}\ny: {<<: *b, c: 2}\n", "%YAML 1.1\n", "x: \"\\ud800\"\n", "x: \t\n",
]


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["b0: &b0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nrun_name: *b{levels - 1}\n"


def _positions(doc, path=()):
    """Every (container path, key) in ``doc``."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield path, k
            yield from _positions(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield path, i
            yield from _positions(v, path + (i,))


def _at(doc, path):
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutated_config(draw) -> dict:
    doc = copy.deepcopy(REAL_CONFIGS[draw(st.sampled_from(sorted(REAL_CONFIGS)))])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        positions = list(_positions(doc))
        if not positions:
            break
        path, key = draw(st.sampled_from(positions))
        parent = _at(doc, path)
        op = draw(st.sampled_from(["delete", "replace", "replace", "wrap", "rename"]))
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(WEIRD_VALUES)
        elif op == "wrap":
            parent[key] = [parent[key], parent[key]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = parent.pop(key)
    return doc


@st.composite
def mutated_config_text(draw) -> bytes:
    text = yaml.safe_dump(draw(mutated_config()), sort_keys=False, allow_unicode=True)
    lines = text.split("\n")
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        op = draw(st.sampled_from(["snippet", "duplicate_line", "bomb", "truncate"]))
        at = draw(st.integers(min_value=0, max_value=len(lines)))
        if op == "snippet":
            lines.insert(at, draw(st.sampled_from(YAML_SNIPPETS)))
        elif op == "duplicate_line" and lines:
            lines.insert(at, lines[min(at, len(lines) - 1)])
        elif op == "bomb":
            lines.append(alias_bomb())
        elif op == "truncate":
            lines = lines[:at]
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=mutated_config_text())
def test_mutated_real_configs_load_or_fail_clearly(workdir, data):
    path = workdir / "mutated.yaml"
    path.write_bytes(data)
    check_config(outcome(lambda: load_config(path)))
    assert "this" not in sys.modules  # "this:s" as a strategy or metric is never imported


MINIMAL = "models: [smollm2-135m]\nprompt_sets: [tiny]\nstrategies: [{name: greedy}]\n"
YAML_TAGS = ["!!int", "!!float", "!!bool", "!!null", "!!str", "!!binary", "!!timestamp", "!!set", "!!omap", "!!pairs",
             "!!seq", "!!map", "!!merge", "!!value", "!!python/tuple", "!!python/name:os.system", "!local", ""]


@FUZZ
@given(key=st.sampled_from(["description", "run_name", "shard_size", "chat", "generation", "x"]),
       tag=st.sampled_from(YAML_TAGS),
       value=st.one_of(st.sampled_from(["''", "x", "1", "-0", "0x1f", "1_000", "2020-13-45", "2001-12-14 21:59:43.10 -5",
                                        "maybe", "[1, 2]", "{a: 1}", "[[a, 1]]", "{max_tokens: 5}", "&a [*a]"]),
                       st.text(max_size=12)))
def test_tagged_and_odd_scalars_load_or_fail_clearly(workdir, key, tag, value):
    path = workdir / "tagged.yaml"
    path.write_bytes(f"{MINIMAL}{key}: {tag} {value}\n".encode("utf-8", "surrogatepass"))
    check_config(outcome(lambda: load_config(path)))


@FUZZ
@given(doc=mutated_config())
def test_mutated_config_mappings_resolve_or_fail_clearly(doc):
    check_config(outcome(lambda: resolve_config(doc, "fuzz")))


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_random_bytes_as_a_config_fail_clearly(workdir, data):
    path = workdir / "random.yaml"
    path.write_bytes(data)
    result = outcome(lambda: load_config(path))
    assert isinstance(result, DecevalError)  # random text never holds models, prompt_sets and strategies


# ---- prompt files -----------------------------------------------------------------------------

#: Any text that encodes as UTF-8: line and paragraph separators, NEL, \x1c-\x1e and \r included.
PROMPT_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40).filter(str.strip)
RECORDS = st.lists(st.fixed_dictionaries({"prompt": PROMPT_TEXT},
                                         optional={"reference": st.one_of(PROMPT_TEXT, st.integers()),
                                                   "aliases": st.lists(PROMPT_TEXT, max_size=2)}),
                   min_size=1, max_size=6)


def jsonl_cfg(path: Path) -> PromptSetConfig:
    return PromptSetConfig(name="fz", path=str(path), chat=False, limit=None)


@FUZZ
@given(records=RECORDS, ascii_only=st.booleans(), crlf=st.booleans(), blank=st.booleans())
def test_well_formed_jsonl_round_trips_every_character(workdir, records, ascii_only, crlf, blank):
    end = "\r\n" if crlf else "\n"
    lines = [json.dumps(r, ensure_ascii=ascii_only) for r in records]
    text = (end + end if blank else end).join(lines) + end
    path = workdir / "ok.jsonl"
    path.write_bytes(text.encode("utf-8"))
    ps = load_prompt_set(jsonl_cfg(path))
    assert [p.text for p in ps.prompts] == [r["prompt"] for r in records]
    assert [p.reference for p in ps.prompts] == [None if "reference" not in r else str(r["reference"]) for r in records]
    assert [p.id for p in ps.prompts] == [f"fz-{i:04d}" for i in range(len(records))]


JSONL_SNIPPETS = [
    '{"prompt": "a", "reference": NaN}', '{"prompt": "a", "reference": Infinity}', '{"prompt": "\\ud800"}',
    '{"id": "\\udfff", "prompt": "x"}', '{"prompt": "a", "prompt": "b"}', '{"prompt": 1}', '[1, 2]', '"just text"',
    '{"prompt": "a", "id": [1]}', '{"prompt": "a", "aliases": "x"}', '{"prompt": "a", "reference": {"a": 1}}',
    '{"prompt": ' + "1" * 5000 + '}', "[" * 5000 + "]" * 5000, '{"prompt": "a"', "", "   ", '{"prompt": "  "}',
    '{"id": 7, "prompt": "a"}', '{"id": 7, "prompt": "b"}', '{"prompt": "x' + "y" * 5000 + '", "id": {}}',
]


@FUZZ
@given(records=RECORDS, data=st.data())
def test_mutated_jsonl_loads_or_fails_clearly(workdir, records, data):
    lines = [json.dumps(r, ensure_ascii=data.draw(st.booleans())) for r in records]
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(lines)))
        lines.insert(at, data.draw(st.sampled_from(JSONL_SNIPPETS)))
    raw = "\n".join(lines).encode("utf-8")
    if data.draw(st.booleans()):
        at = data.draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:at] + data.draw(st.binary(min_size=1, max_size=6)) + raw[at:]
    path = workdir / "mutated.jsonl"
    path.write_bytes(raw)
    result = outcome(lambda: load_prompt_set(jsonl_cfg(path)))
    if isinstance(result, PromptSet):
        assert result.prompts
        for p in result.prompts:  # whatever loads can be written to Parquet and hashed
            for text in (p.id, p.text, p.reference or "", *p.aliases):
                text.encode("utf-8")
            assert p.hash


@FUZZ
@given(before=st.lists(PROMPT_TEXT, max_size=3), surrogate=st.integers(min_value=0xD800, max_value=0xDFFF))
def test_a_lone_surrogate_names_file_line_and_prompt_id(workdir, before, surrogate):
    lines = [json.dumps({"prompt": t}) for t in before]
    lines.append(json.dumps({"id": "bad-one", "prompt": "ok " + chr(surrogate)}))  # json writes \udXXX
    path = workdir / "surrogate.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PromptError) as e:
        load_prompt_set(jsonl_cfg(path))
    msg = str(e.value)
    assert f"{path}:{len(before) + 1}:" in msg and "'bad-one'" in msg and "UTF-8" in msg

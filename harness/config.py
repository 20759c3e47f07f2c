"""Run configuration: YAML -> validated, resolved :class:`RunConfig`.

Every error names the file, the key, what was expected and what was given. Strategy
parameters given as lists expand into a grid of strategy configs, each with a stable
label and id. Import-light: pydantic and yaml only.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import ConfigError, DecevalError

# ---- schema ---------------------------------------------------------------------------------


#: Upper bounds of sizes a config may ask for; each error names the key, range and value.
MAX_SAMPLES_PER_PROMPT = 1000
MAX_PROMPT_LIMIT = 1_000_000
MAX_SHARD_SIZE = 100_000
MAX_REPLICAS = 256
MAX_MODEL_LEN = 1 << 20
MAX_STRATEGY_CONFIGS = 10_000  # expanded grid points over all strategy entries
MAX_NAME_CHARS = 100  # run_name, model names: each becomes (part of) a folder name
#: Planned rows (prompts x strategy configs x samples x seeds x models) above this need --force.
MAX_PLANNED_ROWS = 1_000_000
#: YAML limits: file size, nesting depth, and values after alias expansion (alias bombs).
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000
#: Longest excerpt of a given value quoted in an error message.
EXCERPT_CHARS = 80


class _Strict(BaseModel):
    # strict: no "3" for an int, no true for a number; no inf or nan anywhere.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class EngineOptions(_Strict):
    """vLLM engine settings. On the CPU the KV cache lives in RAM (kv_cache_gib)."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on a CPU with native bf16 (AVX512_BF16, AMX), float32 on other CPUs, "
        "the model's own dtype on a GPU (harness.hardware)")
    max_model_len: int = Field(2048, ge=16, le=MAX_MODEL_LEN, description="context length (prompt + completion)")
    block_size: int = Field(32, ge=16, description="KV-cache block size; a multiple of 32 on the CPU")
    enable_prefix_caching: bool = True
    tail_cache_slots: int | None = Field(
        None, ge=0, description="stepwise strategies: prompt tails kept for reuse (harness.tailcache), one KV block "
        "of every layer each; default 512 on the CPU, 0 (off) on CUDA; 0 turns it off")
    kv_cache_gib: int = Field(2, ge=1, description="CPU KV cache in whole GiB (VLLM_CPU_KVCACHE_SPACE)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    enforce_eager: bool = True
    max_num_seqs: int | None = Field(None, ge=1)
    cpu_cores: str | None = Field(None, pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$", description="cores to bind, e.g. '0-1'; default: this replica's even share of the node's cores")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine_core_process: bool = Field(
        True, description="CPU: run vLLM's engine core in a process of its own (vLLM's layout); false runs it in "
        "the engine's process, one process start fewer (bench/engine_layout.py: faster starts, a little lower "
        "bf16 throughput)")


class ModelEntry(_Strict):
    model: str = Field(description="built-in name (smollm2-135m, gemma3-270m), local HF folder or hub id")
    name: str | None = Field(None, description="label in reports; default: the built-in name or folder name")
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    engine: dict[str, Any] = Field(default_factory=dict)


class PromptSetEntry(_Strict):
    name: str | None = None
    path: str | None = None
    chat: bool | None = None
    limit: int | None = Field(None, ge=1, le=MAX_PROMPT_LIMIT)


class GenerationOptions(_Strict):
    max_tokens: int = Field(64, ge=1, description="at most each model's engine.max_model_len")
    samples_per_prompt: int = Field(1, ge=1, le=MAX_SAMPLES_PER_PROMPT)
    seed: Union[int, list[int]] = 0
    stop: list[str] = Field(default_factory=list)


class OutputOptions(_Strict):
    dir: str = "reports"
    run_id: str | None = None


class RawConfig(_Strict):
    run_name: str = Field("run", min_length=1, max_length=MAX_NAME_CHARS, description="part of the run id (a folder name)")
    description: str = ""
    models: list[Union[str, ModelEntry]] = Field(min_length=1)
    engine: dict[str, Any] = Field(default_factory=dict)
    prompt_sets: list[Union[str, PromptSetEntry]] = Field(min_length=1)
    strategies: list[dict[str, Any]] = Field(min_length=1)
    generation: GenerationOptions = Field(default_factory=GenerationOptions)
    chat: bool = False
    shard_size: int | None = Field(None, ge=1, le=MAX_SHARD_SIZE, description="prompts per work unit; default: the whole prompt list")
    metrics: list[str] | None = None
    regression: dict[str, Any] | None = Field(None, description="gate settings read by 'deceval compare'")
    output: OutputOptions = Field(default_factory=OutputOptions)


# ---- resolved objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    name: str
    ref: str
    replicas: int
    engine: EngineOptions


@dataclass(frozen=True)
class PromptSetConfig:
    name: str
    path: str | None  # None: built-in
    chat: bool
    limit: int | None


@dataclass(frozen=True)
class StrategyConfig:
    """One point of a strategy grid: stable label, slug (path-safe) and id."""

    name: str
    label: str
    params: dict[str, Any]
    samples_per_prompt: int
    max_tokens: int

    @property
    def id(self) -> str:
        return stable_hash({"name": self.name, "params": self.params,
                            "samples_per_prompt": self.samples_per_prompt, "max_tokens": self.max_tokens})[:12]

    @property
    def slug(self) -> str:
        return slugify(self.label)

    def build(self):
        from strategies import get_strategy
        return get_strategy(self.name).from_dict(self.params)


@dataclass(frozen=True)
class RunConfig:
    source: str
    run_name: str
    description: str
    models: tuple[ModelConfig, ...]
    prompt_sets: tuple[PromptSetConfig, ...]
    strategies: tuple[StrategyConfig, ...]
    seeds: tuple[int, ...]
    stop: tuple[str, ...]
    shard_size: int | None
    metrics: tuple[str, ...] | None
    output_dir: str
    run_id_override: str | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def config_hash(self) -> str:
        """Hash of everything that changes outputs (not the output dir or run id)."""
        body = {k: v for k, v in self.raw.items() if k not in ("output", "description", "regression")}
        return stable_hash(body)[:12]

    @property
    def run_id(self) -> str:
        return self.run_id_override or f"{slugify(self.run_name)}-{self.config_hash[:8]}"


# ---- helpers ------------------------------------------------------------------------------------


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


#: A run id names a folder directly under the output folder.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


def check_run_id(run_id: str, where: str) -> str:
    """``run_id``, after checking it is a plain folder name (no '/', not '.' or '..')."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or run_id in (".", "..") \
            or len(run_id) > 128:
        shown = run_id if isinstance(run_id, str) and len(run_id) <= 60 else f"{str(run_id)[:60]}..."
        raise ConfigError(f"{where}: a run id must be 1-128 of the characters A-Z a-z 0-9 . _ - (a folder name "
                          f"under the output folder, not '.' or '..'), got {shown!r}")
    return run_id


def _is_path(text: str) -> bool:
    """Whether ``text`` names an existing file or folder (False for names the OS rejects)."""
    try:
        return Path(text).exists()
    except (OSError, ValueError):
        return False


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "ModelEntry", "PromptSetEntry", "int", "list[int]"):
            continue  # union branch names that pydantic puts in the location
        else:
            out += ("." if out else "") + excerpt(str(part), quote=False)
    return out or "(top level)"


def excerpt(value: Any, limit: int = EXCERPT_CHARS, quote: bool = True) -> str:
    """``repr(value)`` (or ``str`` with ``quote=False``) cut to ``limit`` characters plus
    "...": an error quotes a short piece of the input, never a whole huge value."""
    if isinstance(value, str):
        text = repr(value[: limit + 1]) if quote else value[: limit + 1]
    else:
        text = _REPR.repr(value)  # bounded work even for huge or self-referencing values
    return text if len(text) <= limit else text[:limit] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, EXCERPT_CHARS, EXCERPT_CHARS, EXCERPT_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 8

#: pydantic error types answered with the field's whole range: "must be in [1, 1000], got 5000".
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
#: At most this many problems are listed in one error.
_MAX_ERROR_LINES = 10


def _range_text(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The allowed range of the field at ``loc``, like ``[1, 1000]`` or ``(0, 1]``."""
    current: Any = model
    info = None
    for part in loc:
        if isinstance(part, str) and isinstance(current, type) and issubclass(current, BaseModel) \
                and part in current.model_fields:
            info = current.model_fields[part]
            current = _model_in(info.annotation)
    if info is None:
        return None
    lo = hi = None
    for m in info.metadata:
        lo = f"[{m.ge}" if hasattr(m, "ge") else f"({m.gt}" if hasattr(m, "gt") else lo
        hi = f"{m.le}]" if hasattr(m, "le") else f"{m.lt})" if hasattr(m, "lt") else hi
    if lo is None and hi is None:
        return None
    return f"{lo or '(-inf'}, {hi or 'inf)'}"


def _format_validation_error(source: str, exc: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    seen = set()
    errors = exc.errors()
    for err in errors:
        key = _loc(err["loc"])
        if err["type"] == "extra_forbidden":
            parent_fields = _fields_at(model, err["loc"][:-1])
            bad = str(err["loc"][-1])
            close = difflib.get_close_matches(bad, parent_fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = f"unknown key{hint} Allowed keys here: {', '.join(sorted(parent_fields))}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] in _RANGE_ERRORS and _range_text(model, err["loc"]):
            msg = f"must be in {_range_text(model, err['loc'])}, got {excerpt(err.get('input'))}"
        else:
            msg = f"{err['msg']}, got {excerpt(err.get('input'))}"
        if (key, msg) in seen:
            continue
        seen.add((key, msg))
        lines.append(f"{source}: {key}: {msg}")
        if len(lines) == _MAX_ERROR_LINES:
            lines.append(f"{source}: ... and more problems ({len(errors)} in all); fix these first")
            break
    # Unions report one error per branch; keep them, they say what each form expects.
    return "\n".join(lines)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        if isinstance(part, str) and isinstance(current, type) and issubclass(current, BaseModel):
            f = current.model_fields.get(part)
            if f is None:
                # union branch name like "ModelEntry"
                cand = {"ModelEntry": ModelEntry, "PromptSetEntry": PromptSetEntry}.get(part)
                current = cand
                continue
            ann = f.annotation
            current = _model_in(ann)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def read_text_file(path: Path, what: str, max_bytes: int | None = None) -> str:
    """Read a UTF-8 text file or raise a DecevalError naming the file and the fix."""
    try:
        if not path.exists():
            raise ConfigError(f"{what} not found: {excerpt(str(path), quote=False)} (check the path; relative paths "
                              f"are taken from the current directory)")
        if path.is_dir():
            raise ConfigError(f"{what} {path} is a directory; expected a file")
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise ConfigError(f"{what} {path} is {path.stat().st_size:,} bytes, more than the {max_bytes:,} allowed; "
                              f"a {what} is a few kilobytes")
        data = path.read_bytes()
    except (OSError, ValueError) as exc:  # unreadable, a name too long, a NUL byte in the name
        raise ConfigError(f"{what} {excerpt(str(path), quote=False)}: cannot read it ({exc.__class__.__name__}: "
                          f"{excerpt(str(exc), quote=False)}); check the path and its permissions") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
                          f"re-save the file as UTF-8") from None


class YAMLLimitError(yaml.YAMLError):
    """Well-formed YAML that a run config may not hold: a duplicate key, nesting or alias
    expansion beyond the limits, a value that cannot be built."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message, self.mark = message, mark


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also rejects duplicate keys, nesting deeper than
    MAX_YAML_DEPTH, recursive aliases and documents that expand (aliases counted at every
    use) to more than MAX_YAML_NODES values; all of it before any Python object is built."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0  # nesting of the node being composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YAMLLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep; a run config needs a few",
                                     self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        # SafeConstructor trusts explicitly tagged scalars: "!!int x", a 5000-digit int,
        # "!!timestamp 2020-13-45", "!!timestamp nonsense", "!!bool maybe", "!!int ''".
        except (ValueError, OverflowError, AttributeError, LookupError, TypeError) as exc:
            shown = repr(excerpt(node.value, quote=False)) if isinstance(node, yaml.ScalarNode) else node.tag
            raise YAMLLimitError(f"cannot read the value {shown} ({excerpt(str(exc), quote=False)})",
                                 node.start_mark) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[Any, str] = {}  # key -> where it was first given
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in with "<<" may be overridden: not duplicates
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_seen
                except TypeError:
                    continue  # unhashable: SafeLoader reports it
                if seen:
                    raise YAMLLimitError(f"duplicate key {excerpt(key)} (first given at {first_seen[key]}); "
                                         f"give each key once", key_node.start_mark)
                mark = key_node.start_mark
                first_seen[key] = f"line {mark.line + 1}, column {mark.column + 1}"
        return super().construct_mapping(node, deep)


def _check_expansion(root: Any) -> None:
    """Raise YAMLLimitError if the node graph under ``root`` is cyclic, or expanded (each
    alias counted where it is used) exceeds MAX_YAML_NODES nodes or MAX_YAML_DEPTH levels.
    Iterative, and each node is visited once: linear in the document's text."""
    if root is None:
        return
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, depth)
    open_: set[int] = set()  # nodes entered and not yet finished: the current path
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finish = stack.pop()
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        if finish:
            size = 1 + sum(done[id(c)][0] for c in children)
            depth = 1 + max((done[id(c)][1] for c in children), default=0)
            if size > MAX_YAML_NODES:
                raise YAMLLimitError(f"expands to more than {MAX_YAML_NODES:,} values (aliases *x repeat what their "
                                     f"anchor &x holds, at every use); a run config needs far fewer", node.start_mark)
            if depth > MAX_YAML_DEPTH:
                raise YAMLLimitError(f"aliases nest values more than {MAX_YAML_DEPTH} levels deep", node.start_mark)
            done[id(node)] = (size, depth)
            open_.discard(id(node))
            continue
        if id(node) in done:
            continue
        if id(node) in open_:
            raise YAMLLimitError("an alias refers to a value that contains it (a recursive structure)", node.start_mark)
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children)


def load_yaml(path: Path) -> Any:
    """Safe-load a config file with :class:`ConfigLoader`; ConfigError on any problem."""
    text = read_text_file(path, "config file", max_bytes=MAX_CONFIG_BYTES)
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader
    except YAMLLimitError as exc:
        where = f":{exc.mark.line + 1}:{exc.mark.column + 1}" if exc.mark is not None else ""
        raise ConfigError(f"{path}{where}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: malformed YAML: {excerpt(problem, 300, quote=False)}. Fix the syntax at "
                          f"that position (indentation, a missing ':' or an unclosed quote or bracket).") from None


def expand_strategy(entry: dict[str, Any], index: int, source: str, generation: GenerationOptions,
                    max_configs: int = MAX_STRATEGY_CONFIGS) -> list[StrategyConfig]:
    """One YAML strategy entry -> its grid of StrategyConfigs (lists expand), at most
    ``max_configs`` of them."""
    from strategies import STRATEGIES

    key = f"strategies[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping like {{name: top_p, top_p: 0.9}}, got {excerpt(entry)}")
    entry = dict(entry)
    name = entry.pop("name", None)
    if not isinstance(name, str) or not name:
        problem = "required key is missing" if name is None else f"expected a strategy name, got {excerpt(name)}"
        raise ConfigError(f"{source}: {key}.name: {problem}; give a strategy name "
                          f"(one of: {', '.join(STRATEGIES.names())})")
    label = entry.pop("label", None)
    if label is not None and (not isinstance(label, str) or not label or len(label) > MAX_NAME_CHARS):
        raise ConfigError(f"{source}: {key}.label: expected a text of 1-{MAX_NAME_CHARS} characters, got {excerpt(label)}")
    samples = entry.pop("samples_per_prompt", generation.samples_per_prompt)
    max_tokens = entry.pop("max_tokens", generation.max_tokens)
    for opt, value, high in (("samples_per_prompt", samples, MAX_SAMPLES_PER_PROMPT), ("max_tokens", max_tokens, None)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high and value > high):
            raise ConfigError(f"{source}: {key}.{opt}: expected an integer in [1, {high or 'max_model_len'}], "
                              f"got {excerpt(value)}")
    try:
        cls = STRATEGIES.get(name)
    except DecevalError as exc:
        raise ConfigError(f"{source}: {key}.name: {exc}") from None

    grid_keys = [k for k, v in entry.items() if isinstance(v, list)]
    for k in grid_keys:
        if not entry[k]:
            raise ConfigError(f"{source}: {key}.{k}: an empty list expands to no strategy configs; give at least one value")
    size = math.prod(len(entry[k]) for k in grid_keys)
    if size > max_configs:
        raise ConfigError(f"{source}: {key}: the grid expands to {size:,} strategy configs "
                          f"({' x '.join(str(len(entry[k])) for k in grid_keys)}), more than the {max_configs:,} left of "
                          f"the {MAX_STRATEGY_CONFIGS:,} a config may hold; give fewer values")
    combos = itertools.product(*(entry[k] for k in grid_keys)) if grid_keys else [()]
    out = []
    for combo in combos:
        params = dict(entry)
        params.update(zip(grid_keys, combo))
        try:
            strategy = cls.from_dict(params)
        except DecevalError as exc:
            shown = ", ".join(f"{k}={excerpt(v, 40, quote=False)}" for k, v in zip(grid_keys, combo))
            raise ConfigError(f"{source}: {key} ({name}{'; ' + shown if shown else ''}): "
                              f"{excerpt(str(exc), 300, quote=False)}") from None
        full = strategy.params.to_dict()
        given = ",".join(f"{k}={full[k]}" for k in sorted(params))
        if label:
            lab = label + (f"({','.join(f'{k}={full[k]}' for k in grid_keys)})" if grid_keys else "")
        else:
            lab = name + (f"({given})" if given else "")
        if len(slugify(lab)) > 2 * MAX_NAME_CHARS:  # the strategy= folder of the report
            raise ConfigError(f"{source}: {key}: the label {excerpt(lab)} is {len(lab):,} characters, more than "
                              f"{2 * MAX_NAME_CHARS}; give the entry a short 'label'")
        out.append(StrategyConfig(name=name, label=lab, params=full, samples_per_prompt=samples,
                                  max_tokens=max_tokens))
    return out


def _check_plain_data(raw: Any, source: str) -> None:
    """ConfigError unless ``raw`` is plain data: string keys, finite numbers. Iterative, so
    a deep structure given by code cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", raw)]
    visited = 0
    while stack:
        where, value = stack.pop()
        visited += 1
        if visited > MAX_YAML_NODES:  # also ends a walk of a self-containing structure
            raise ConfigError(f"{source}: the config holds more than {MAX_YAML_NODES:,} values; a run config needs "
                              f"far fewer")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ConfigError(f"{source}: {where or '(top level)'}: keys must be text, got the key "
                                      f"{excerpt(k)} ({type(k).__name__}); quote it")
                stack.append((f"{where}.{excerpt(k, quote=False)}" if where else excerpt(k, quote=False), v))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: {where}: expected a finite number, got {value}; give a number such as 1.0")


def check_metric_plugins(cfg: RunConfig) -> None:
    """Import each ``module:attr`` metric of ``cfg`` and check it is a
    ``harness.metrics.Metric``: for a run, before it starts. Validation never imports them
    (resolve_config only finds their modules)."""
    from harness.metrics import METRICS, Metric
    for j, name in enumerate(cfg.metrics or ()):
        if name in METRICS:
            continue
        try:
            obj = METRICS.get(name)
        except DecevalError as exc:
            raise ConfigError(f"{cfg.source}: metrics[{j}]: {exc}") from None
        if not isinstance(obj, Metric):
            raise ConfigError(f"{cfg.source}: metrics[{j}]: {excerpt(name)} is {excerpt(obj)}, not a "
                              f"harness.metrics.Metric; point it at a Metric object")


def planned_rows(cfg: RunConfig, n_prompts: int) -> int:
    """Rows a run of ``cfg`` writes over ``n_prompts`` prompts, counted as harness.plan
    plans them (a deterministic strategy runs its first seed only)."""
    per_model = sum(s.samples_per_prompt * (1 if s.build().deterministic else len(cfg.seeds)) for s in cfg.strategies)
    return n_prompts * per_model * len(cfg.models)


def check_planned_rows(cfg: RunConfig, n_prompts: int, force: bool = False) -> int:
    """The planned row count; ConfigError when it exceeds MAX_PLANNED_ROWS, unless ``force``."""
    rows = planned_rows(cfg, n_prompts)
    if rows > MAX_PLANNED_ROWS and not force:
        raise ConfigError(
            f"{cfg.source}: the plan has {rows:,} rows ({n_prompts:,} prompts x {len(cfg.strategies):,} strategy "
            f"config(s) x their samples_per_prompt x {len(cfg.seeds):,} seed(s) x {len(cfg.models):,} model(s)), "
            f"more than the {MAX_PLANNED_ROWS:,} allowed without --force; lower a prompt set's limit, "
            f"samples_per_prompt, the seeds or the strategy grid, or pass --force to run it anyway")
    return rows


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read, validate and resolve a run config. Raises ConfigError with a fixable message."""
    path = Path(path)
    source = str(path)
    raw = load_yaml(path)
    if raw is None:
        raise ConfigError(f"{source}: the file is empty; expected a mapping with models, prompt_sets and strategies")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level (models:, prompt_sets:, strategies:), "
                          f"got {type(raw).__name__}")
    if overrides:
        raw = {**raw, **overrides}
    return resolve_config(raw, source)


def resolve_config(raw: dict[str, Any], source: str = "<config>") -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level (models:, prompt_sets:, strategies:), "
                          f"got {type(raw).__name__}")
    _check_plain_data(raw, source)
    try:
        cfg = RawConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc, RawConfig)) from None

    def engine_options(overrides: dict[str, Any], key: str) -> EngineOptions:
        try:
            return EngineOptions.model_validate({**cfg.engine, **overrides})
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(source, exc, EngineOptions).replace(f"{source}: ", f"{source}: {key}.")) from None

    models = []
    for i, m in enumerate(cfg.models):
        entry = ModelEntry(model=m) if isinstance(m, str) else m
        name = entry.name or slugify(Path(entry.model).name if "/" in entry.model and _is_path(entry.model) else entry.model)
        if len(slugify(name)) > MAX_NAME_CHARS:  # the model= folder of the report
            raise ConfigError(f"{source}: models[{i}]: the model's report name would be {len(slugify(name)):,} characters, "
                              f"more than {MAX_NAME_CHARS}; give it a shorter 'name'")
        eng = engine_options(entry.engine, f"models[{i}].engine" if entry.engine else "engine")
        models.append(ModelConfig(name=name, ref=entry.model, replicas=entry.replicas, engine=eng))
    names = [m.name for m in models]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{source}: models: duplicate model name(s) {sorted(dup)}; give each entry a distinct 'name'")
    slugs = [slugify(n) for n in names]  # the report's model= partition folders
    clash = sorted({n for n, sl in zip(names, slugs) if slugs.count(sl) > 1})
    if clash:
        raise ConfigError(f"{source}: models: names {clash} map to the same report folder "
                          f"(model={slugify(clash[0])}); give them names that differ in letters or digits")

    prompt_sets = []
    for i, p in enumerate(cfg.prompt_sets):
        entry = PromptSetEntry(name=p) if isinstance(p, str) else p
        if isinstance(p, str) and (p.endswith((".jsonl", ".parquet", ".json")) or "/" in p):
            entry = PromptSetEntry(path=p)
        if not entry.name and not entry.path:
            raise ConfigError(f"{source}: prompt_sets[{i}]: give a built-in 'name' or a 'path' to a JSONL/Parquet file")
        name = entry.name or Path(entry.path).stem
        prompt_sets.append(PromptSetConfig(name=slugify(name), path=entry.path,
                                           chat=cfg.chat if entry.chat is None else entry.chat, limit=entry.limit))
    if len({p.name for p in prompt_sets}) != len(prompt_sets):
        raise ConfigError(f"{source}: prompt_sets: duplicate prompt set names; give each a distinct 'name'")

    strategies: list[StrategyConfig] = []
    shortest = min(models, key=lambda m: m.engine.max_model_len)
    for i, entry in enumerate(cfg.strategies):
        expanded = expand_strategy(entry, i, source, cfg.generation, MAX_STRATEGY_CONFIGS - len(strategies))
        if expanded[0].max_tokens > shortest.engine.max_model_len:  # one max_tokens per entry: not a grid key
            key = f"strategies[{i}].max_tokens" if "max_tokens" in entry else "generation.max_tokens"
            raise ConfigError(f"{source}: {key}: must be in [1, {shortest.engine.max_model_len}] (the engine's "
                              f"max_model_len of model {shortest.name!r}), got {expanded[0].max_tokens}; lower it "
                              f"or raise engine.max_model_len")
        strategies.extend(expanded)
    labels = [s.label for s in strategies]
    if len(set(s.slug for s in strategies)) != len(strategies):
        dup = sorted({l for l in labels if labels.count(l) > 1})
        raise ConfigError(f"{source}: strategies: the same strategy config appears twice ({dup}); "
                          f"remove the duplicate or give it a distinct 'label'")

    seeds = cfg.generation.seed if isinstance(cfg.generation.seed, list) else [cfg.generation.seed]
    if not seeds or any(s < 0 or s >= 2**63 for s in seeds):  # the report's seed column is int64
        raise ConfigError(f"{source}: generation.seed: expected an integer in [0, 2**63) or a non-empty list of them, "
                          f"got {str(cfg.generation.seed)[:80]}")

    if cfg.regression is not None:
        from harness.regression import parse_gate_config
        try:
            parse_gate_config(cfg.regression, source=f"{source}: regression")
        except (DecevalError, ValueError) as exc:
            raise ConfigError(excerpt(str(exc), 400, quote=False)) from None
        except TypeError as exc:  # e.g. a mapping where a metric name belongs: unhashable
            raise ConfigError(f"{source}: regression: malformed gate settings ({excerpt(str(exc), quote=False)}); "
                              f"expected gates: {{metric: {{tolerance: x}}}} or a list of metric names") from None

    if cfg.metrics is not None:
        from harness.metrics import METRICS
        for j, mname in enumerate(cfg.metrics):
            try:
                METRICS.check(mname)  # imports no plugin: validating a config runs no code it names
            except DecevalError as exc:
                raise ConfigError(f"{source}: metrics[{j}]: {exc}") from None

    return RunConfig(
        source=source, run_name=cfg.run_name, description=cfg.description, models=tuple(models),
        prompt_sets=tuple(prompt_sets), strategies=tuple(strategies), seeds=tuple(seeds),
        stop=tuple(cfg.generation.stop), shard_size=cfg.shard_size,
        metrics=tuple(cfg.metrics) if cfg.metrics is not None else None,
        output_dir=cfg.output.dir, raw=raw,
        run_id_override=None if cfg.output.run_id is None else check_run_id(cfg.output.run_id, f"{source}: output.run_id"))

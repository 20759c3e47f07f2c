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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import ConfigError, DecevalError

# ---- schema ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineOptions(_Strict):
    """vLLM engine settings. On the CPU the KV cache lives in RAM (kv_cache_gib)."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on a CPU with native bf16 (AVX512_BF16, AMX), float32 on other CPUs, "
        "the model's own dtype on a GPU (harness.hardware)")
    max_model_len: int = Field(2048, ge=16, description="context length (prompt + completion)")
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
    replicas: int = Field(1, ge=1)
    engine: dict[str, Any] = Field(default_factory=dict)


class PromptSetEntry(_Strict):
    name: str | None = None
    path: str | None = None
    chat: bool | None = None
    limit: int | None = Field(None, ge=1)


class GenerationOptions(_Strict):
    max_tokens: int = Field(64, ge=1)
    samples_per_prompt: int = Field(1, ge=1)
    seed: Union[int, list[int]] = 0
    stop: list[str] = Field(default_factory=list)


class OutputOptions(_Strict):
    dir: str = "reports"
    run_id: str | None = None


class RawConfig(_Strict):
    run_name: str = "run"
    description: str = ""
    models: list[Union[str, ModelEntry]] = Field(min_length=1)
    engine: dict[str, Any] = Field(default_factory=dict)
    prompt_sets: list[Union[str, PromptSetEntry]] = Field(min_length=1)
    strategies: list[dict[str, Any]] = Field(min_length=1)
    generation: GenerationOptions = Field(default_factory=GenerationOptions)
    chat: bool = False
    shard_size: int | None = Field(None, ge=1, description="prompts per work unit; default: the whole prompt list")
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


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "ModelEntry", "PromptSetEntry", "int", "list[int]"):
            continue  # union branch names that pydantic puts in the location
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _format_validation_error(source: str, exc: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    seen = set()
    for err in exc.errors():
        key = _loc(err["loc"])
        if err["type"] == "extra_forbidden":
            parent_fields = _fields_at(model, err["loc"][:-1])
            bad = str(err["loc"][-1])
            close = difflib.get_close_matches(bad, parent_fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = f"unknown key{hint} Allowed keys here: {', '.join(sorted(parent_fields))}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = f"{err['msg']}, got {err.get('input')!r}"
        if (key, msg) in seen:
            continue
        seen.add((key, msg))
        lines.append(f"{source}: {key}: {msg}")
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


def read_text_file(path: Path, what: str) -> str:
    """Read a UTF-8 text file or raise a DecevalError naming the file and the fix."""
    if not path.exists():
        raise ConfigError(f"{what} not found: {path} (check the path; relative paths are taken from the current directory)")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; expected a file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
                          f"re-save the file as UTF-8") from None


def load_yaml(path: Path) -> Any:
    text = read_text_file(path, "config file")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: malformed YAML: {problem}. Fix the syntax at that position "
                          f"(indentation, a missing ':' or an unclosed quote or bracket).") from None


def expand_strategy(entry: dict[str, Any], index: int, source: str, generation: GenerationOptions) -> list[StrategyConfig]:
    """One YAML strategy entry -> its grid of StrategyConfigs (lists expand)."""
    from strategies import STRATEGIES

    key = f"strategies[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping like {{name: top_p, top_p: 0.9}}, got {entry!r}")
    entry = dict(entry)
    name = entry.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: {key}.name: required key is missing; give a strategy name "
                          f"(one of: {', '.join(STRATEGIES.names())})")
    label = entry.pop("label", None)
    samples = entry.pop("samples_per_prompt", generation.samples_per_prompt)
    max_tokens = entry.pop("max_tokens", generation.max_tokens)
    for opt, value in (("samples_per_prompt", samples), ("max_tokens", max_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{source}: {key}.{opt}: expected an integer >= 1, got {value!r}")
    try:
        cls = STRATEGIES.get(name)
    except DecevalError as exc:
        raise ConfigError(f"{source}: {key}.name: {exc}") from None

    grid_keys = [k for k, v in entry.items() if isinstance(v, list)]
    for k in grid_keys:
        if not entry[k]:
            raise ConfigError(f"{source}: {key}.{k}: an empty list expands to no strategy configs; give at least one value")
    combos = itertools.product(*(entry[k] for k in grid_keys)) if grid_keys else [()]
    out = []
    for combo in combos:
        params = dict(entry)
        params.update(zip(grid_keys, combo))
        try:
            strategy = cls.from_dict(params)
        except DecevalError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in zip(grid_keys, combo))
            raise ConfigError(f"{source}: {key} ({name}{'; ' + shown if shown else ''}): {exc}") from None
        full = strategy.params.to_dict()
        given = ",".join(f"{k}={full[k]}" for k in sorted(params))
        if label:
            lab = label + (f"({','.join(f'{k}={full[k]}' for k in grid_keys)})" if grid_keys else "")
        else:
            lab = name + (f"({given})" if given else "")
        out.append(StrategyConfig(name=name, label=lab, params=full, samples_per_prompt=samples,
                                  max_tokens=max_tokens))
    return out


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
        name = entry.name or slugify(Path(entry.model).name if "/" in entry.model and Path(entry.model).exists() else entry.model)
        eng = engine_options(entry.engine, f"models[{i}].engine" if entry.engine else "engine")
        models.append(ModelConfig(name=name, ref=entry.model, replicas=entry.replicas, engine=eng))
    names = [m.name for m in models]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{source}: models: duplicate model name(s) {sorted(dup)}; give each entry a distinct 'name'")

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
    for i, entry in enumerate(cfg.strategies):
        strategies.extend(expand_strategy(entry, i, source, cfg.generation))
    labels = [s.label for s in strategies]
    if len(set(s.slug for s in strategies)) != len(strategies):
        dup = sorted({l for l in labels if labels.count(l) > 1})
        raise ConfigError(f"{source}: strategies: the same strategy config appears twice ({dup}); "
                          f"remove the duplicate or give it a distinct 'label'")

    seeds = cfg.generation.seed if isinstance(cfg.generation.seed, list) else [cfg.generation.seed]
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"{source}: generation.seed: expected a non-negative integer or a non-empty list of them, got {cfg.generation.seed!r}")

    if cfg.regression is not None:
        from harness.regression import parse_gate_config
        try:
            parse_gate_config(cfg.regression, source=f"{source}: regression")
        except (DecevalError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    if cfg.metrics is not None:
        from harness.metrics import METRICS
        for j, mname in enumerate(cfg.metrics):
            if mname not in METRICS:
                try:
                    METRICS.get(mname)
                except DecevalError as exc:
                    raise ConfigError(f"{source}: metrics[{j}]: {exc}") from None

    return RunConfig(
        source=source, run_name=cfg.run_name, description=cfg.description, models=tuple(models),
        prompt_sets=tuple(prompt_sets), strategies=tuple(strategies), seeds=tuple(seeds),
        stop=tuple(cfg.generation.stop), shard_size=cfg.shard_size,
        metrics=tuple(cfg.metrics) if cfg.metrics is not None else None,
        output_dir=cfg.output.dir, run_id_override=cfg.output.run_id, raw=raw)

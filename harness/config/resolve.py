"""Run configuration: YAML -> validated, resolved :class:`RunConfig`.

Every error names the file, the key, what was expected and what was given. Strategy
parameters given as lists expand into a grid of strategy configs, each with a stable
label and id. Names of strategies and metrics are checked against their registries;
validating imports no plugin a config names.
"""

from __future__ import annotations

import difflib
import itertools
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.config.files import load_yaml
from harness.config.gate import parse_gate_config
from harness.config.schema import (
    MAX_NAME_CHARS,
    MAX_PLANNED_ROWS,
    MAX_SAMPLES_PER_PROMPT,
    MAX_STRATEGY_CONFIGS,
    MAX_YAML_NODES,
    EngineOptions,
    GenerationOptions,
    ModelConfig,
    ModelEntry,
    PromptSetEntry,
    RawConfig,
    RunConfig,
    StrategyConfig,
    check_run_id,
    slugify,
)
from harness.errors import ConfigError, DecevalError, excerpt
from harness.metrics import METRICS, Metric
from harness.tasks import PromptSetConfig
from harness.tasks.extract import EXTRACTORS
from harness.tasks.lm_eval_bridge import is_yaml_ref
from harness.tasks.sources import FILE_SUFFIXES, HFDataset, Template
from strategies import STRATEGIES


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

def expand_strategy(entry: dict[str, Any], index: int, source: str, generation: GenerationOptions,
                    max_configs: int = MAX_STRATEGY_CONFIGS) -> list[StrategyConfig]:
    """One YAML strategy entry -> its grid of StrategyConfigs (lists expand), at most
    ``max_configs`` of them."""

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


def reject_other_kind(raw: dict[str, Any], source: str, command: str) -> None:
    """A study file or a tune config given to the wrong command: one line naming the right one."""
    if "parts" in raw and "claims" in raw:
        if command != "study":
            raise ConfigError(f"{source}: a study file (it has 'parts:' and 'claims:'); run it with 'deceval study "
                              f"{source}', or check it with 'deceval study {source} --dry-run'")
    elif "tune" in raw and command == "run":
        raise ConfigError(f"{source}: a tune config (it has a 'tune:' section); run it with 'deceval tune {source}', "
                          f"or check it with 'deceval tune {source} --dry-run'")


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
    reject_other_kind(raw, source, "run")
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
    # Resolved in file order, so that of several mistakes the first one is reported.
    models = _resolve_models(cfg, source)
    prompt_sets = _resolve_prompt_sets(cfg, source)
    strategies = _resolve_strategies(cfg, models, source)
    seeds = cfg.generation.seed if isinstance(cfg.generation.seed, list) else [cfg.generation.seed]
    if not seeds or any(s < 0 or s >= 2**63 for s in seeds):  # the report's seed column is int64
        raise ConfigError(f"{source}: generation.seed: expected an integer in [0, 2**63) or a non-empty list of them, "
                          f"got {str(cfg.generation.seed)[:80]}")
    _check_gates_and_metrics(cfg, source)
    shared = [m.name for m in models if m.engine.share_prefix_cache]
    if cfg.generation.timing_repeats > 1 and shared:
        raise ConfigError(f"{source}: generation.timing_repeats is {cfg.generation.timing_repeats}, but model "
                          f"{shared[0]!r} has engine.share_prefix_cache: true; timing repeats must each start from "
                          f"the same empty cache: set timing_repeats: 1 or share_prefix_cache: false")
    return RunConfig(
        source=source, run_name=cfg.run_name, description=cfg.description, models=tuple(models),
        prompt_sets=tuple(prompt_sets), strategies=tuple(strategies), seeds=tuple(seeds),
        stop=tuple(cfg.generation.stop), shard_size=cfg.shard_size, timing_repeats=cfg.generation.timing_repeats,
        metrics=tuple(cfg.metrics) if cfg.metrics is not None else None,
        output_dir=cfg.output.dir, raw=raw,
        run_id_override=None if cfg.output.run_id is None else check_run_id(cfg.output.run_id, f"{source}: output.run_id"))


def _resolve_models(cfg: RawConfig, source: str) -> list[ModelConfig]:
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
    return models


def prompt_set_mapping(entry: Any) -> dict[str, Any]:
    """A ``prompt_sets`` entry as a mapping: a string is a file path when it looks like one
    (a .jsonl/.parquet/.csv/.json name or a '/'), else a built-in name."""
    if not isinstance(entry, str):
        return dict(entry)
    return {"path": entry} if entry.endswith(FILE_SUFFIXES) or "/" in entry else {"name": entry}


def _resolve_prompt_sets(cfg: RawConfig, source: str) -> list[PromptSetConfig]:
    prompt_sets = []
    for i, p in enumerate(cfg.prompt_sets):
        entry = PromptSetEntry(**prompt_set_mapping(p)) if isinstance(p, str) else p
        key = f"{source}: prompt_sets[{i}]"
        if entry.path and entry.hf_dataset:
            raise ConfigError(f"{key}: give 'path' (a file) or 'hf_dataset', not both")
        if not entry.name and not entry.path and not entry.hf_dataset and not entry.lm_eval_task:
            raise ConfigError(f"{key}: give a built-in 'name' or a 'path' to a JSONL/Parquet/CSV file (or an "
                              f"'hf_dataset', or an 'lm_eval_task')")
        _check_lm_eval_keys(entry, key)
        _check_task_keys(entry, key)
        hf = entry.hf_dataset
        name = entry.name or (_lm_eval_set_name(entry.lm_eval_task) if entry.lm_eval_task else
                              Path(entry.path).stem if entry.path else hf.path.rstrip("/").rsplit("/", 1)[-1])
        prompt_sets.append(PromptSetConfig(
            name=slugify(name), path=entry.path, chat=cfg.chat if entry.chat is None else entry.chat,
            limit=entry.limit, split=entry.split, dev_fraction=entry.dev_fraction,
            hf_dataset=None if hf is None else HFDataset(path=hf.path, split=hf.split, name=hf.name,
                                                         data_files=hf.data_files),
            fields={k: v for k, v in (entry.fields.model_dump() if entry.fields else {}).items() if v is not None},
            template=entry.template, fewshot=entry.fewshot, fewshot_path=entry.fewshot_path,
            extractor=entry.extractor, licence=entry.licence, lm_eval_task=entry.lm_eval_task,
            num_fewshot=entry.num_fewshot))
    if len({p.name for p in prompt_sets}) != len(prompt_sets):
        raise ConfigError(f"{source}: prompt_sets: duplicate prompt set names; give each a distinct 'name'")
    return prompt_sets


#: The keys that say where a set's prompts come from and how they are made and read; an
#: lm_eval_task entry takes all of that from the lm-eval task.
_OWN_DATA_KEYS = ("path", "hf_dataset", "fields", "template", "fewshot", "fewshot_path", "extractor")


def _lm_eval_set_name(task_ref: str) -> str:
    """An lm_eval_task entry's default name: the task name, or the YAML file's name."""
    return Path(task_ref).stem if is_yaml_ref(task_ref) else task_ref


def _check_lm_eval_keys(entry: PromptSetEntry, key: str) -> None:
    """An lm_eval_task entry gives none of the own-data keys; num_fewshot belongs to one."""
    if entry.lm_eval_task is None:
        if entry.num_fewshot is not None:
            raise ConfigError(f"{key}.num_fewshot: only for an lm_eval_task entry; for your own data give "
                              f"fewshot: N")
        return
    given = [k for k in _OWN_DATA_KEYS if k in entry.model_fields_set and getattr(entry, k) not in (None, 0)]
    if given:
        raise ConfigError(f"{key}: lm_eval_task builds its prompts, few-shot examples and answers with the "
                          f"lm-eval task itself; drop {', '.join(map(repr, given))} (they belong in the task YAML: "
                          f"dataset_kwargs, doc_to_text, filter_list; the number of examples is num_fewshot)")


def _check_task_keys(entry: PromptSetEntry, key: str) -> None:
    """The extractor is a registered one (or a plugin module that exists: nothing is
    imported), the template has plain placeholders only, and the few-shot keys agree."""
    if entry.extractor is not None:
        try:
            EXTRACTORS.check(entry.extractor)
        except DecevalError as exc:
            raise ConfigError(f"{key}.extractor: {exc}") from None
    if entry.template is not None:
        try:
            Template(entry.template)
        except DecevalError as exc:
            raise ConfigError(f"{key}.template: {exc}") from None
        if entry.fields is not None and entry.fields.prompt is not None:
            raise ConfigError(f"{key}: fields.prompt and template both say where the prompt comes from; give one "
                              f"(a template may name any field: '{{{entry.fields.prompt}}}')")
    if entry.fewshot_path is not None and not entry.fewshot:
        raise ConfigError(f"{key}.fewshot_path: given, but fewshot is 0; set fewshot: N to use its first N records")


def _resolve_strategies(cfg: RawConfig, models: list[ModelConfig], source: str) -> list[StrategyConfig]:
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
    return strategies


def _check_gates_and_metrics(cfg: RawConfig, source: str) -> None:
    if cfg.regression is not None:
        try:
            parse_gate_config(cfg.regression, source=f"{source}: regression")
        except (DecevalError, ValueError) as exc:
            raise ConfigError(excerpt(str(exc), 400, quote=False)) from None
        except TypeError as exc:  # e.g. a mapping where a metric name belongs: unhashable
            raise ConfigError(f"{source}: regression: malformed gate settings ({excerpt(str(exc), quote=False)}); "
                              f"expected gates: {{metric: {{tolerance: x}}}} or a list of metric names") from None
    if cfg.metrics is not None:
        for j, mname in enumerate(cfg.metrics):
            try:
                METRICS.check(mname)  # imports no plugin: validating a config runs no code it names
            except DecevalError as exc:
                raise ConfigError(f"{source}: metrics[{j}]: {exc}") from None

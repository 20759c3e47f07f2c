"""Work units: model x strategy config x prompt shard x seed, each with a
content-addressed id (same inputs -> same id -> same file -> skipped on rerun)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from harness.config import RunConfig, StrategyConfig, slugify, stable_hash
from harness.metrics import default_metrics
from harness.tasks import Prompt, PromptSet
from harness.rows import union_columns
from strategies import STRATEGIES, builtin_names
from strategies.base import Column


@dataclass(frozen=True)
class WorkUnit:
    id: str
    model: str
    model_ref: str
    strategy: StrategyConfig
    prompts: tuple[Prompt, ...]
    seed: int
    shard: int
    #: where generation stops besides EOS and max_tokens: generation.stop and the stop strings
    #: of the unit's prompt set (:func:`stop_groups`); part of the id
    stop: tuple[str, ...]
    #: metric names (not part of the id: metrics do not change what is generated)
    metrics: tuple[str, ...] | None = None
    #: how many times the generation is timed (not part of the id: timing does not change what is generated)
    timing_repeats: int = 1

    @property
    def relpath(self) -> str:
        """Hive-partitioned location of the unit's file under ``samples/`` (path-safe slugs)."""
        return f"model={slugify(self.model)}/strategy={self.strategy.slug}/{self.id}.parquet"

    @property
    def expected_rows(self) -> int:
        return len(self.prompts) * self.strategy.samples_per_prompt


def shard(prompts: Sequence[Prompt], size: int | None) -> list[tuple[Prompt, ...]]:
    if not size:
        return [tuple(prompts)]
    return [tuple(prompts[i:i + size]) for i in range(0, len(prompts), size)]


def metric_names(cfg: RunConfig) -> list[str]:
    """The metrics a run of ``cfg`` scores: the config's list, else the registry's defaults."""
    return list(cfg.metrics) if cfg.metrics is not None else default_metrics()


def row_columns(cfg: RunConfig) -> tuple[list[Column], list[Column]]:
    """The strategy-declared columns of a run's rows: (per-sample columns, step-trace
    fields) of every built-in strategy and of the config's own, so every report of one
    version has the same columns whatever strategies it ran, and a plugin strategy adds
    its own."""
    return declared_columns([STRATEGIES.get(n) for n in builtin_names()] + [type(s.build()) for s in cfg.strategies])


def builtin_columns() -> tuple[list[Column], list[Column]]:
    """The columns the built-in strategies declare (for reports that predate run.json's
    ``columns`` entry)."""
    return declared_columns([STRATEGIES.get(n) for n in builtin_names()])


def declared_columns(classes: Sequence[type]) -> tuple[list[Column], list[Column]]:
    return (union_columns((c.sample_columns for c in classes), "per-sample column"),
            union_columns((c.step_fields for c in classes), "step-trace field"))


def stop_groups(stop: Sequence[str], prompt_sets: Sequence[PromptSet]) -> list[tuple[tuple[str, ...], list[Prompt]]]:
    """The run's prompts, in order, grouped by the stop strings generation stops at for them:
    ``generation.stop`` followed by their prompt set's own (an lm-eval task's ``until``
    strings, :attr:`PromptSet.stop`). A unit holds prompts of one group only, so a set's stop
    strings never cut another set's completions. Sets without stop strings of their own
    form one group, sharded across sets as a run without lm-eval tasks always was."""
    groups: dict[tuple[str, ...], list[Prompt]] = {}
    for ps in prompt_sets:
        merged = (*stop, *(s for s in dict.fromkeys(ps.stop) if s not in stop))
        groups.setdefault(merged, []).extend(ps.prompts)
    return list(groups.items())


def make_plan(cfg: RunConfig, prompt_sets: Sequence[PromptSet]) -> list[WorkUnit]:
    metrics = tuple(metric_names(cfg))
    chunks = [(stop, chunk) for stop, prompts in stop_groups(cfg.stop, prompt_sets)
              for chunk in shard(prompts, cfg.shard_size)]
    units = []
    for model in cfg.models:
        for strategy in cfg.strategies:
            # A deterministic strategy gives the same output for every seed: run it once.
            seeds = cfg.seeds[:1] if strategy.build().deterministic else cfg.seeds
            for seed in seeds:
                for index, (stop, chunk) in enumerate(chunks):
                    uid = stable_hash({
                        "model": model.name, "ref": model.ref, "dtype": model.engine.dtype,
                        "strategy": strategy.id, "seed": seed, "stop": list(stop),
                        "prompts": [(p.set, p.id, p.hash) for p in chunk],
                    })[:16]
                    units.append(WorkUnit(id=uid, model=model.name, model_ref=model.ref, strategy=strategy,
                                          prompts=chunk, seed=seed, shard=index, stop=stop,
                                          metrics=metrics, timing_repeats=cfg.timing_repeats))
    return units

"""The ``tune:`` section of a config: strategy families with search spaces, one trial
budget for all, an objective and constraints (read by ``deceval tune``, harness.tune).

    tune:
      objective: exact_match          # a registered metric with a direction
      trials: 8                       # per family: the same budget for every family
      dev_fraction: 0.5               # prompts in the dev split (a stable hash of each id)
      seed: 0                         # the samplers' seed
      baseline: greedy                # the family the others are compared with on test
      constraints: {rep_2: {max: 0.2}, distinct_2: {min: 0.5}}
      families:
        - {name: greedy}
        - {name: top_p, top_p: {low: 0.5, high: 1.0}, temperature: {low: 0.2, high: 1.5}}
        - {name: min_p, min_p: [0.05, 0.1, 0.2]}      # a list: these values only
        - {name: temperature, label: temp-log, temperature: {low: 0.1, high: 2, log: true}}

A parameter given a mapping ``{low, high}`` (optional ``log: true``, ``step``) is searched
over that range (integers when the parameter is one); a list is a choice among its
values; a plain value is fixed. Every endpoint and choice is checked against the
strategy's own parameter rules when the config is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError, DecevalError, excerpt
from harness.metrics import METRICS
from strategies import STRATEGIES

#: Trials per family at most (each is a unit per model on the dev split).
MAX_TRIALS = 500
TUNE_KEYS = {"objective", "trials", "dev_fraction", "seed", "baseline", "constraints", "families"}
RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Space:
    """One searched parameter: a range (``low``..``high``) or a list of ``choices``."""

    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Family:
    key: str  # the label (or the strategy name): one per family
    name: str
    fixed: dict[str, Any]
    space: dict[str, Space]

    @property
    def grid_size(self) -> int | None:
        """The number of configurations when every searched parameter is a choice."""
        if any(s.kind != "choice" for s in self.space.values()):
            return None
        return math.prod(len(s.choices) for s in self.space.values())


@dataclass(frozen=True)
class Constraint:
    metric: str
    min: float | None = None
    max: float | None = None

    def holds(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True)
class TuneConfig:
    objective: str
    direction: str  # "maximize" or "minimize", from the metric's registry entry
    trials: int
    dev_fraction: float
    seed: int
    baseline: str | None
    constraints: tuple[Constraint, ...]
    families: tuple[Family, ...]
    #: What else the samplers' seeds derive from (a study sets "<part>/<model>", so no two parts
    #: or models draw the same trials); empty: the seed plus the family's index, as before.
    #: Not in the repr: a study's run name, which the tune's id hashes, already names both.
    seed_key: str = field(default="", repr=False)

    def sampler_seed(self, index: int, family: str) -> int:
        """The seed of a family's sampler: ``seed + index`` for a plain tune; with a
        ``seed_key``, 31 bits of SHA-256 over (seed, seed_key, family), distinct per part,
        model and family."""
        if not self.seed_key:
            return self.seed + index
        digest = hashlib.sha256(f"{self.seed}\x00{self.seed_key}\x00{family}".encode()).digest()
        return int.from_bytes(digest[:4], "big") >> 1

    @property
    def metrics(self) -> list[str]:
        """The metrics a trial must be scored on."""
        return list(dict.fromkeys([self.objective] + [c.metric for c in self.constraints]))


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {excerpt(value)}")
    return float(value)


def _metric(where: str, name: Any) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"{where}: expected a metric name, got {excerpt(name)}")
    try:
        METRICS.check(name)
        return METRICS.get(name).name
    except DecevalError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _space(where: str, cls: type, param: str, value: Any) -> Space | None:
    """The search space a family entry gives a parameter, or None when it is fixed."""
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    is_int = isinstance(fields[param].default, int) and not isinstance(fields[param].default, bool)
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: an empty list has nothing to choose from; give at least one value")
        return Space("choice", choices=tuple(value))
    if isinstance(value, dict):
        unknown = sorted(set(value) - RANGE_KEYS)
        if unknown or "low" not in value or "high" not in value:
            raise ConfigError(f"{where}: a range is {{low: a, high: b}} with optional log: true and step; "
                              f"got {excerpt(value)}")
        low, high = _number(f"{where}.low", value["low"]), _number(f"{where}.high", value["high"])
        if not low < high:
            raise ConfigError(f"{where}: low must be below high, got low={low:g}, high={high:g}")
        log = value.get("log", False)
        if not isinstance(log, bool) or (log and low <= 0):
            raise ConfigError(f"{where}.log: true needs low > 0 (a log scale), got log={log!r}, low={low:g}")
        step = None if value.get("step") is None else _number(f"{where}.step", value["step"])
        if step is not None and (step <= 0 or log):
            raise ConfigError(f"{where}.step: must be > 0 and cannot go with log: true, got {step:g}")
        return Space("int" if is_int else "float", low=low, high=high, log=log, step=step)
    return None


def _family(where: str, entry: Any, seen: set[str]) -> Family:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"{where}: expected a mapping with a strategy 'name', like {{name: top_p, top_p: "
                          f"{{low: 0.5, high: 1.0}}}}, got {excerpt(entry)}")
    entry = dict(entry)
    name, label = entry.pop("name"), entry.pop("label", None)
    try:
        cls = STRATEGIES.get(name)
    except DecevalError as exc:
        raise ConfigError(f"{where}.name: {exc}") from None
    known = {f.name for f in dataclasses.fields(cls.Params)}
    for key in entry:
        if key not in known:
            raise ConfigError(f"{where}.{key}: not a parameter of strategy {name!r}; its parameters: "
                              f"{', '.join(sorted(known)) or 'none'}")
    space = {k: s for k, v in entry.items() if (s := _space(f"{where}.{k}", cls, k, v)) is not None}
    fixed = {k: v for k, v in entry.items() if k not in space}
    for k, s in space.items():  # every endpoint and choice must be a valid value of the parameter
        for v in (s.choices if s.kind == "choice" else (s.low, s.high)):
            v = int(v) if s.kind == "int" else v
            try:
                cls.from_dict({**fixed, k: v})
            except DecevalError as exc:
                raise ConfigError(f"{where}.{k}: {excerpt(v)} is not a valid value: {exc}") from None
    try:
        cls.from_dict(fixed)
    except DecevalError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    key = label if isinstance(label, str) and label else name
    if key in seen:
        raise ConfigError(f"{where}: a second family called {key!r}; give each family of one strategy a 'label'")
    seen.add(key)
    return Family(key=key, name=name, fixed=fixed, space=space)


def parse_tune_config(raw: Any, source: str) -> TuneConfig:
    where = f"{source}: tune"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with objective, trials and families, got {excerpt(raw)}")
    unknown = sorted(set(raw) - TUNE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(TUNE_KEYS))}")
    objective = _metric(f"{where}.objective", raw.get("objective"))
    better = METRICS.get(objective).higher_is_better
    if better is None:
        raise ConfigError(f"{where}.objective: metric {objective!r} has no direction (informational); "
                          f"choose a metric that is better higher or lower")
    trials = raw.get("trials", 8)
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise ConfigError(f"{where}.trials: expected an integer in [1, {MAX_TRIALS}], got {excerpt(trials)}")
    frac = _number(f"{where}.dev_fraction", raw.get("dev_fraction", 0.5))
    if not 0 < frac < 1:
        raise ConfigError(f"{where}.dev_fraction: must be in (0, 1), got {frac:g}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where}.seed: expected an integer >= 0, got {excerpt(seed)}")
    constraints = []
    for metric, bound in (raw.get("constraints") or {}).items():
        m = _metric(f"{where}.constraints", metric)
        if not isinstance(bound, dict) or not bound or set(bound) - {"min", "max"}:
            raise ConfigError(f"{where}.constraints.{metric}: expected {{min: x}} and/or {{max: y}}, got {excerpt(bound)}")
        constraints.append(Constraint(m, *(None if bound.get(k) is None else _number(f"{where}.constraints.{metric}.{k}",
                                                                                   bound[k]) for k in ("min", "max"))))
    entries = raw.get("families")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}.families: expected a list of strategy families, got {excerpt(entries)}")
    seen: set[str] = set()
    families = tuple(_family(f"{where}.families[{i}]", e, seen) for i, e in enumerate(entries))
    baseline = raw.get("baseline")
    if baseline is not None and baseline not in seen:
        raise ConfigError(f"{where}.baseline: {excerpt(baseline)} is not one of the families ({', '.join(sorted(seen))})")
    return TuneConfig(objective=objective, direction="maximize" if better else "minimize", trials=trials,
                      dev_fraction=frac, seed=seed, baseline=baseline, constraints=tuple(constraints),
                      families=families)

"""The regression gate's settings (a config's ``regression:`` section, or a gate file):
which metrics are gated with which tolerance, and the test settings. Every error names
the key, the allowed range and the value."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from harness.metrics import METRICS

#: Gated by default (task quality; cost metrics are machine dependent and not gated).
DEFAULT_GATES: dict[str, float] = {"exact_match": 0.0, "contains_answer": 0.0, "numeric_match": 0.0, "pass_at_1": 0.0}

@dataclass(frozen=True)
class GateConfig:
    #: metric -> tolerance (the non-inferiority margin), in the metric's own units
    gates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_GATES))
    #: level of the one-sided bounds (and of the two-sided CI of the verdict)
    confidence: float = 0.95
    #: bootstrap resamples
    n_boot: int = 2000
    #: a baseline (model, strategy) absent from the candidate fails the gate
    fail_on_missing: bool = True
    #: how much the candidate's error-row share may exceed the baseline's
    max_error_share_increase: float = 0.0
    #: how much a gated metric's coverage may fall below the baseline's
    max_coverage_drop: float = 0.0
    #: where the settings came from (printed as ``gate: <source>``)
    source: str = "defaults"


_KEYS = ("gates", "confidence", "n_boot", "fail_on_missing", "max_error_share_increase", "max_coverage_drop")


def _share(raw: Mapping[str, Any], key: str, source: str) -> float:
    v = raw.get(key, 0.0)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v) or not 0 <= v <= 1:
        raise ValueError(f"{source}.{key} must be a number in [0, 1] (a share), got {v!r}")
    return float(v)


def parse_gate_config(raw: Mapping[str, Any] | None, source: str = "regression") -> GateConfig:
    """Validate a ``regression:`` mapping; errors name the key, the allowed range and the value."""
    if raw is None:
        return GateConfig(source=source)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: expected a mapping with keys among {list(_KEYS)}, got {type(raw).__name__}")
    if "regression" in raw:
        if not isinstance(raw["regression"], Mapping):
            raise ValueError(f"{source}.regression: expected a mapping with keys among {list(_KEYS)}, "
                             f"got {type(raw['regression']).__name__}")
        raw = raw["regression"]
    extra = sorted(map(str, set(raw) - set(_KEYS)))
    if extra:
        raise ValueError(f"{source}: unknown key(s) {extra}; allowed: {sorted(_KEYS)}")
    conf = raw.get("confidence", 0.95)
    if not isinstance(conf, (int, float)) or isinstance(conf, bool) or not 0.5 < conf < 1:
        raise ValueError(f"{source}.confidence must be in (0.5, 1) (the level of a one-sided bound), got {conf!r}")
    n_boot = raw.get("n_boot", 2000)
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 100:
        raise ValueError(f"{source}.n_boot must be an integer >= 100, got {n_boot!r}")
    fom = raw.get("fail_on_missing", True)
    if not isinstance(fom, bool):
        raise ValueError(f"{source}.fail_on_missing must be true or false, got {fom!r}")
    max_err = _share(raw, "max_error_share_increase", source)
    max_cov = _share(raw, "max_coverage_drop", source)
    gates_raw = raw.get("gates", None)
    if gates_raw is None:
        gates = dict(DEFAULT_GATES)
    else:
        if isinstance(gates_raw, list):
            if not all(isinstance(g, str) for g in gates_raw):
                raise ValueError(f"{source}.gates: a list of gates must hold metric names only, e.g. "
                                 f"[contains_answer, pass_at_1]; for tolerances use a mapping metric -> {{tolerance: x}}")
            gates_raw = {g: {} for g in gates_raw}
        if not isinstance(gates_raw, Mapping):
            raise ValueError(f"{source}.gates must be a mapping metric -> {{tolerance: x}} or a list of metric names, "
                             f"got {type(gates_raw).__name__}")
        gates = {}
        for name, spec in gates_raw.items():
            where = f"{source}.gates.{name}"
            if name not in METRICS:
                close = difflib.get_close_matches(str(name), METRICS.names(), n=1)
                raise ValueError(f"{where}: unknown metric {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
            if METRICS.get(name).higher_is_better is None:
                raise ValueError(f"{where}: metric {name!r} has no direction (informational) and cannot be gated")
            if isinstance(spec, (int, float)) and not isinstance(spec, bool):
                spec = {"tolerance": spec}
            spec = spec or {}
            if not isinstance(spec, Mapping) or set(spec) - {"tolerance"}:
                raise ValueError(f"{where}: expected {{tolerance: <number >= 0>}}, got {spec!r}")
            tol = spec.get("tolerance", 0.0)
            if not isinstance(tol, (int, float)) or isinstance(tol, bool) or tol < 0 or math.isnan(tol):
                raise ValueError(f"{where}.tolerance must be a number >= 0, got {tol!r}")
            gates[name] = float(tol)
    return GateConfig(gates=gates, confidence=float(conf), n_boot=n_boot, fail_on_missing=fom,
                      max_error_share_increase=max_err, max_coverage_drop=max_cov, source=source)


def load_gate_config(path: Path | str | None = None, baseline_run: Mapping[str, Any] | None = None,
                     baseline_dir: Path | str | None = None) -> GateConfig:
    """The gate: from the YAML file ``path``, else from ``baseline_run``'s
    ``config.regression`` (the baseline's run.json; a candidate never picks its own gate),
    else the defaults."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"gate file not found: {p}; expected a YAML file with a 'regression:' section")
        if p.is_dir():
            raise ValueError(f"gate file {p} is a folder; expected a YAML file with a 'regression:' section")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"gate file {p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"gate file {p}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc})") from None
        return parse_gate_config(raw or {}, source=str(p))
    where = f"{baseline_dir}/run.json" if baseline_dir is not None else "baseline run.json"
    config = (baseline_run or {}).get("config")
    section = config.get("regression") if isinstance(config, Mapping) else None
    if section is not None:
        return parse_gate_config(section, source=f"{where} config.regression (baseline)")
    return GateConfig(source=f"defaults ({where} has no config.regression)")

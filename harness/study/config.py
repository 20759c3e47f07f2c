"""The study config: models, tasks ("parts", each with its own objective), the strategy
families every part tunes with one budget, the dependency probe, and the claims to decide.

Every (model, part) becomes an ordinary tune config (``harness.tune``); a claim is a list of
paired comparisons between two tuned families on a part's test split, or the probe. The
whole file is checked when it is read (``deceval study CONFIG --dry-run``), so a typo fails
in a second, not after an hour of tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.config import TuneConfig, load_yaml, parse_tune_config, resolve_config
from harness.errors import ConfigError, excerpt
from harness.metrics import METRICS
from harness.models import builtin_names
from harness.probe import ProbeConfig

STUDY_KEYS = {"name", "description", "models", "engine", "tune", "families", "parts", "probe", "claims", "focus",
              "output"}
PART_KEYS = {"prompt_sets", "generation", "metrics", "objective", "constraints"}
TEST_KEYS = {"part", "treatment", "control", "metric", "expect"}
PROBE_KEYS = {"n_texts", "context", "positions", "ks", "threshold", "n_boot", "seed"}
EXPECT = ("higher", "lower")


@dataclass(frozen=True)
class ClaimTest:
    """One paired comparison: treatment minus control on a part's test split."""

    part: str
    treatment: str
    control: str
    metric: str
    expect: str  # "higher" or "lower": the direction the claim predicts for treatment - control


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    tests: tuple[ClaimTest, ...] = ()
    probe: bool = False  # decided by the dependency probe instead of paired tests


@dataclass(frozen=True)
class StudyConfig:
    name: str
    description: str
    models: dict[str, dict[str, Any]]  # model -> per-model run settings (chat)
    parts: dict[str, dict[str, Any]]
    tunes: dict[tuple[str, str], tuple[dict[str, Any], TuneConfig]]  # (model, part) -> (run base, tune)
    probe: dict[str, Any]
    claims: tuple[Claim, ...]
    focus: tuple[str, ...]  # families the report examines closely: where each loses, its most repetitive output
    output_dir: str
    source: str

    def probe_config(self, model: str) -> ProbeConfig:
        p = dict(self.probe)
        return ProbeConfig(model, texts=p.get("n_texts", 16), context=p.get("context", 192),
                           positions=p.get("positions", 8), ks=tuple(p.get("ks", ProbeConfig.ks)),
                           threshold=p.get("threshold", 0.1), n_boot=p.get("n_boot", 2000), seed=p.get("seed", 0))


def _mapping(where: str, value: Any, keys: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {excerpt(value)}")
    if keys is not None and set(value) - keys:
        raise ConfigError(f"{where}: unknown key(s) {sorted(set(value) - keys)}; allowed: {', '.join(sorted(keys))}")
    return value


def _parse_models(where: str, raw: Any) -> dict[str, dict[str, Any]]:
    if isinstance(raw, list):
        raw = {m: {} for m in raw}
    models = _mapping(where, raw)
    if not models:
        raise ConfigError(f"{where}: name at least one model ({', '.join(builtin_names())})")
    for name, opts in models.items():
        if name not in builtin_names():
            raise ConfigError(f"{where}.{name}: not a built-in model; the study runs the probe on each model, which "
                              f"needs a prepared folder: one of {', '.join(builtin_names())}")
        _mapping(f"{where}.{name}", opts or {}, {"chat"})
    return {k: dict(v or {}) for k, v in models.items()}


def _parse_claims(where: str, raw: Any, parts: dict[str, Any], families: set[str]) -> tuple[Claim, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a list of claims, each {{id, text, tests}} or {{id, text, probe: "
                          f"dependency}}, got {excerpt(raw)}")
    out = []
    for i, c in enumerate(raw):
        w = f"{where}[{i}]"
        c = _mapping(w, c, {"id", "text", "tests", "probe"})
        if not isinstance(c.get("id"), str) or not isinstance(c.get("text"), str):
            raise ConfigError(f"{w}: a claim needs an 'id' and a 'text' (strings)")
        if ("tests" in c) == ("probe" in c):
            raise ConfigError(f"{w} ({c['id']}): give either 'tests' (paired comparisons) or 'probe: dependency'")
        if "probe" in c:
            if c["probe"] != "dependency":
                raise ConfigError(f"{w}.probe: the only probe is 'dependency', got {excerpt(c['probe'])}")
            out.append(Claim(c["id"], c["text"], probe=True))
            continue
        tests = []
        for j, t in enumerate(c["tests"] if isinstance(c["tests"], list) else [None]):
            tw = f"{w}.tests[{j}]"
            t = _mapping(tw, t, TEST_KEYS)
            if set(t) != TEST_KEYS:
                raise ConfigError(f"{tw}: a test needs {', '.join(sorted(TEST_KEYS))}; missing "
                                  f"{sorted(TEST_KEYS - set(t))}")
            if t["part"] not in parts:
                raise ConfigError(f"{tw}.part: {excerpt(t['part'])} is not a part ({', '.join(parts)})")
            for side in ("treatment", "control"):
                if t[side] not in families:
                    raise ConfigError(f"{tw}.{side}: {excerpt(t[side])} is not a family ({', '.join(sorted(families))})")
            if t["metric"] not in METRICS:
                raise ConfigError(f"{tw}.metric: unknown metric {excerpt(t['metric'])}")
            if t["expect"] not in EXPECT:
                raise ConfigError(f"{tw}.expect: expected one of {', '.join(EXPECT)}, got {excerpt(t['expect'])}")
            tests.append(ClaimTest(t["part"], t["treatment"], t["control"], t["metric"], t["expect"]))
        out.append(Claim(c["id"], c["text"], tuple(tests)))
    return tuple(out)


def parse_study_config(raw: Any, source: str) -> StudyConfig:
    raw = _mapping(source, raw, STUDY_KEYS)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: name: expected the study's name (its report folder), got {excerpt(name)}")
    models = _parse_models(f"{source}: models", raw.get("models"))
    parts = _mapping(f"{source}: parts", raw.get("parts"))
    if not parts:
        raise ConfigError(f"{source}: parts: name at least one task, each with prompt_sets and an objective")
    tune_common = _mapping(f"{source}: tune", raw.get("tune") or {}, {"trials", "dev_fraction", "seed", "baseline"})
    output_dir = str(_mapping(f"{source}: output", raw.get("output") or {}, {"dir"}).get("dir", "reports"))
    tunes = {}
    for part, spec in parts.items():
        spec = _mapping(f"{source}: parts.{part}", spec, PART_KEYS)
        if "prompt_sets" not in spec or "objective" not in spec:
            raise ConfigError(f"{source}: parts.{part}: needs prompt_sets and objective")
        tune_raw = {**tune_common, "objective": spec["objective"], "families": raw.get("families"),
                    **({"constraints": spec["constraints"]} if spec.get("constraints") else {})}
        tcfg = parse_tune_config(tune_raw, f"{source}: parts.{part}")
        for model, opts in models.items():
            base = {"run_name": f"{name}-{model}-{part}", "models": [model], "prompt_sets": spec["prompt_sets"],
                    **({"engine": raw["engine"]} if raw.get("engine") else {}),
                    **({"generation": spec["generation"]} if spec.get("generation") else {}),
                    **({"metrics": spec["metrics"]} if spec.get("metrics") else {}),
                    "chat": bool(opts.get("chat", False)), "output": {"dir": output_dir}}
            # the run part is checked as a run config now (strategies come from the families)
            resolve_config({**base, "strategies": [{"name": f.name, **f.fixed} for f in tcfg.families]},
                           f"{source}: parts.{part} ({model})")
            tunes[(model, part)] = (base, tcfg)
    families = {f.key for f in next(iter(tunes.values()))[1].families}
    probe = _mapping(f"{source}: probe", raw.get("probe") or {}, PROBE_KEYS)
    cfg = StudyConfig(name=name, description=str(raw.get("description", "")), models=models, parts=parts,
                      tunes=tunes, probe=probe, claims=(), focus=(), output_dir=output_dir, source=source)
    for model in models:
        cfg.probe_config(model).validate()
    claims = _parse_claims(f"{source}: claims", raw.get("claims"), parts, families)
    focus = raw.get("focus") or []
    if not isinstance(focus, list) or any(f not in families for f in focus):
        raise ConfigError(f"{source}: focus: expected a list of families ({', '.join(sorted(families))}), got "
                          f"{excerpt(focus)}")
    return replace(cfg, claims=claims, focus=tuple(focus))


def load_study_config(path: str | Path) -> StudyConfig:
    return parse_study_config(load_yaml(Path(path)), str(path))

"""The study config: models, tasks ("parts", each with its own objective), the strategy
families every part tunes with one budget, the dependency probe, and the claims to decide.

Every (model, part) becomes an ordinary tune config (``harness.tune``); a claim is a list of
paired comparisons between two tuned families on a part's test split, or the probe. The
whole file is checked when it is read (``deceval study CONFIG --dry-run``), so a typo fails
in a second, not after an hour of tuning.

Deciding a claim needs a declared smallest effect of interest for every metric a claim test
uses (``smallest_effect: {exact_match: 0.05, coherence: 0.02}``, in the metric's own units):
it sizes the study (``--plan``), and a test whose difference is shown to lie within it is
*equivalent*. ``alpha`` (family-wise, Holm over all tests of the study) and ``power`` go
with it. A part's ``replicate: {prompt_sets: [...]}`` names other prompt sets the chosen
configurations run on afterwards, to see whether each verdict holds there too.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.config import TuneConfig, load_yaml, parse_tune_config, prompt_set_mapping, resolve_config
from harness.errors import ConfigError, excerpt
from harness.metrics import METRICS
from harness.models import builtin_names
from harness.probe import ProbeConfig
from harness.tune.tuner import TPE_STARTUP_TRIALS

STUDY_KEYS = {"name", "description", "models", "engine", "tune", "families", "parts", "probe", "claims", "focus",
              "output", "smallest_effect", "alpha", "power"}
PART_KEYS = {"prompt_sets", "generation", "metrics", "objective", "constraints", "replicate"}
SEARCHES = ("tpe", "random")
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
    smallest_effect: dict[str, float] = field(default_factory=dict)  # metric -> smallest difference of interest
    alpha: float = 0.05  # family-wise error rate over all the study's tests (Holm)
    power: float = 0.8  # the power --plan sizes the study for
    search: str = "tpe"  # "tpe": budget >= TPE's start-up trials; "random": a declared seeded random search
    replicate: dict[str, list[Any]] = field(default_factory=dict)  # part -> prompt sets to replicate the test on

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
    tune_common = dict(_mapping(f"{source}: tune", raw.get("tune") or {},
                                {"trials", "dev_fraction", "seed", "baseline", "search"}))
    search = tune_common.pop("search", "tpe")
    if search not in SEARCHES:
        raise ConfigError(f"{source}: tune.search: expected one of {', '.join(SEARCHES)}, got {excerpt(search)}")
    trials = tune_common.get("trials", 8)
    if search == "tpe" and isinstance(trials, int) and trials <= TPE_STARTUP_TRIALS:
        raise ConfigError(f"{source}: tune.trials: with search: tpe the budget must exceed TPE's "
                          f"{TPE_STARTUP_TRIALS} seeded start-up trials (up to them every trial is a random draw), "
                          f"allowed: {TPE_STARTUP_TRIALS + 1} or more, got {trials}; raise it, or declare "
                          f"'search: random' for a seeded random search of that budget")
    if search == "random" and isinstance(trials, int) and trials > TPE_STARTUP_TRIALS:
        raise ConfigError(f"{source}: tune.trials: with search: random the budget is at most TPE's "
                          f"{TPE_STARTUP_TRIALS} seeded random start-up trials (beyond them TPE proposes), allowed: "
                          f"1 to {TPE_STARTUP_TRIALS}, got {trials}; or declare 'search: tpe'")
    alpha, power = raw.get("alpha", 0.05), raw.get("power", 0.8)
    for key, value, (lo, hi) in (("alpha", alpha, (0.0, 0.5)), ("power", power, (0.5, 1.0))):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value < hi:
            raise ConfigError(f"{source}: {key}: expected a number in ({lo:g}, {hi:g}), got {excerpt(value)}")
    smallest = _mapping(f"{source}: smallest_effect", raw.get("smallest_effect") or {})
    for metric, value in smallest.items():
        if metric not in METRICS:
            raise ConfigError(f"{source}: smallest_effect.{metric}: unknown metric {excerpt(metric)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{source}: smallest_effect.{metric}: expected a number > 0 (in the metric's units), "
                              f"got {excerpt(value)}")
    output_dir = str(_mapping(f"{source}: output", raw.get("output") or {}, {"dir"}).get("dir", "reports"))
    tunes = {}
    for part, spec in parts.items():
        spec = _mapping(f"{source}: parts.{part}", spec, PART_KEYS)
        if "prompt_sets" not in spec or "objective" not in spec:
            raise ConfigError(f"{source}: parts.{part}: needs prompt_sets and objective")
        if spec.get("replicate") is not None:
            rep = _mapping(f"{source}: parts.{part}.replicate", spec["replicate"], {"prompt_sets"})
            sets = rep.get("prompt_sets")
            if not isinstance(sets, list) or not sets:
                raise ConfigError(f"{source}: parts.{part}.replicate.prompt_sets: expected a list of prompt sets, "
                                  f"got {excerpt(sets)}")
            own = {_set_name(p) for p in spec["prompt_sets"]}
            if shared := own & {_set_name(p) for p in sets}:
                raise ConfigError(f"{source}: parts.{part}.replicate.prompt_sets: {sorted(shared)} is also tuned on "
                                  f"in this part; a replication needs prompt sets the tune never saw")
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
            if spec.get("replicate"):
                resolve_config({**base, "prompt_sets": spec["replicate"]["prompt_sets"],
                                "strategies": [{"name": f.name, **f.fixed} for f in tcfg.families]},
                               f"{source}: parts.{part}.replicate ({model})")
            tunes[(model, part)] = (base, replace(tcfg, seed_key=f"{part}/{model}"))
    families = {f.key for f in next(iter(tunes.values()))[1].families}
    probe = _mapping(f"{source}: probe", raw.get("probe") or {}, PROBE_KEYS)
    cfg = StudyConfig(name=name, description=str(raw.get("description", "")), models=models, parts=parts,
                      tunes=tunes, probe=probe, claims=(), focus=(), output_dir=output_dir, source=source)
    for model in models:
        cfg.probe_config(model).validate()
    claims = _parse_claims(f"{source}: claims", raw.get("claims"), parts, families)
    for claim in claims:
        for t in claim.tests:
            if t.metric not in smallest:
                raise ConfigError(f"{source}: smallest_effect.{t.metric}: claim {claim.id} tests {t.metric}; declare "
                                  f"its smallest effect of interest (a number > 0 in the metric's units), e.g. "
                                  f"smallest_effect: {{{t.metric}: ...}}")
    focus = raw.get("focus") or []
    if not isinstance(focus, list) or any(f not in families for f in focus):
        raise ConfigError(f"{source}: focus: expected a list of families ({', '.join(sorted(families))}), got "
                          f"{excerpt(focus)}")
    return replace(cfg, claims=claims, focus=tuple(focus), smallest_effect={k: float(v) for k, v in smallest.items()},
                   alpha=float(alpha), power=float(power), search=search,
                   replicate={p: list(spec["replicate"]["prompt_sets"]) for p, spec in parts.items()
                              if spec.get("replicate")})


def _set_name(entry: Any) -> str:
    m = prompt_set_mapping(entry)
    return str(m.get("name") or m.get("path") or m.get("hf_dataset") or m.get("lm_eval_task"))


def pilot_raw(raw: dict[str, Any], limit: int) -> dict[str, Any]:
    """The study file as its pilot: the name ``<name>-pilot`` and every prompt set (tuned and
    replication) cut to at most ``limit`` prompts; everything else, the budget included, as is,
    so the pilot's seconds per prompt are the full study's."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 4:
        raise ConfigError(f"--pilot: expected a number of prompts per set >= 4, got {excerpt(limit)}")
    out = copy.deepcopy(raw)
    out["name"] = f"{raw.get('name')}-pilot"

    def cut(entry: Any) -> dict[str, Any]:
        m = prompt_set_mapping(entry)
        m["limit"] = min(limit, m.get("limit") or limit)
        return m

    for spec in (out.get("parts") or {}).values():
        if isinstance(spec, dict):
            spec["prompt_sets"] = [cut(p) for p in spec.get("prompt_sets") or []]
            if isinstance(spec.get("replicate"), dict):
                spec["replicate"]["prompt_sets"] = [cut(p) for p in spec["replicate"].get("prompt_sets") or []]
    return out


def load_study_config(path: str | Path, pilot: int | None = None) -> StudyConfig:
    """The study file, checked; with ``pilot``, its pilot (:func:`pilot_raw`)."""
    raw = load_yaml(Path(path))
    if pilot is not None:
        raw = pilot_raw(_mapping(str(path), raw), pilot)
    return parse_study_config(raw, str(path))

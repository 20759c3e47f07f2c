"""``deceval tune``: the same trial budget for every strategy family, on the dev split;
the best configuration of each family then on the test split, as a normal report.

Flow (one driver process, the engines loaded once and kept between runs):

1. The config's prompt sets are cut into dev and test by a stable hash of each prompt id
   (``tune.dev_fraction``; harness.tasks.in_dev_split), so a prompt never moves between
   splits and tuning never sees a test prompt.
2. Round r asks each family that still has budget for one trial (Optuna's ask-and-tell:
   a seeded TPE sampler with the constraints, or a grid sampler when every searched
   parameter is a list no longer than the budget), and runs all of them as one ordinary
   run, ``<tune>/dev/round-<r>``: every trial is a resumable Parquet unit. Its objective
   (the metric's mean over dev prompts) and constraint values are told back.
3. The best feasible trial of each family, in the objective's direction (ties: the
   earlier trial), runs on the test split with the same seeds for all: ``<tune>/test``,
   with its leaderboard, the paired differences against the baseline family, and the
   sensitivity of the objective to each searched parameter (tune.md, sensitivity/*.png).

A tune that stops part-way is resumed by running it again: the samplers are seeded, so
the same trials are proposed in the same order, the runner finds the finished ones'
units done (it checks them; nothing finished runs again), and the tune goes on where it
stopped. Everything is in ``tune.json``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import itertools
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from harness.analysis.leaderboard import build_leaderboard, write_leaderboard
from harness.analysis.stats import metric_ci, paired_diff_ci, per_prompt
from harness.config import (RunConfig, TuneConfig, load_yaml, parse_tune_config, prompt_set_mapping, reject_other_kind,
                            resolve_config, slugify)
from harness.driver.placement import KEPT
from harness.driver.runner import RunOutcome, run
from harness.errors import ConfigError
from harness.report import inside, read_samples, write_json_atomic

#: TPE's first trials are seeded random draws (Optuna's default count, kept explicit): a budget
#: no larger than this is a seeded random search.
TPE_STARTUP_TRIALS = 10

#: Trial values are means over dev prompts; None when no prompt was scored.
Value = float | None


@dataclass
class Trial:
    family: str
    number: int
    params: dict[str, Any]
    label: str
    run_id: str = ""
    value: Value = None
    constraints: dict[str, Value] = field(default_factory=dict)
    feasible: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "number": self.number, "params": self.params, "label": self.label,
                "run_id": self.run_id, "value": self.value, "constraints": self.constraints, "feasible": self.feasible}


@dataclass
class TuneOutcome:
    tune_id: str
    tune_dir: Path
    trials: dict[str, list[Trial]]
    best: dict[str, Trial | None]
    rounds: list[RunOutcome]
    test: RunOutcome | None
    leaderboard: Any = None  # the test run's Leaderboard (harness.analysis), built once here


def load_tune_config(path: str | Path) -> tuple[dict[str, Any], TuneConfig, str]:
    """(the run part of the config, its tune section, the source name)."""
    source = str(path)
    raw = load_yaml(Path(path))
    if isinstance(raw, dict):
        reject_other_kind(raw, source, "tune")
    if not isinstance(raw, dict) or "tune" not in raw:
        raise ConfigError(f"{source}: a tune config has a 'tune:' section (objective, trials, families); see "
                          f"configs/tune-quick.yaml")
    base = {k: v for k, v in raw.items() if k != "tune"}
    if "strategies" in base:
        raise ConfigError(f"{source}: strategies: a tune config lists its strategies as tune.families (with search "
                          f"spaces); remove the top-level 'strategies'")
    tcfg = parse_tune_config(raw["tune"], source)
    return base, tcfg, source


def tune_id(base: dict[str, Any], tcfg: TuneConfig) -> str:
    """The tune's folder name: the run name and a hash of everything that decides its trials."""
    text = json.dumps({"base": {k: v for k, v in base.items() if k != "output"}, "tune": repr(tcfg)},
                      sort_keys=True, default=str)
    return f"{base.get('run_name', 'tune')}-tune-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def split_prompt_sets(base: dict[str, Any], split: str, dev_fraction: float) -> list[Any]:
    return [{**prompt_set_mapping(p), "split": split, "dev_fraction": dev_fraction} for p in base["prompt_sets"]]


def _run_config(base: dict[str, Any], tcfg: TuneConfig, split: str, strategies: list[dict[str, Any]],
                out_dir: Path, run_id: str, source: str, prompt_sets: list[Any] | None = None) -> RunConfig:
    """A run of ``strategies`` on the ``split`` of the base's prompt sets, or on ``prompt_sets``
    as given (whole sets the tune never saw: a replication)."""
    raw = copy.deepcopy(base)
    metrics = raw.get("metrics")
    sets = split_prompt_sets(base, split, tcfg.dev_fraction) if prompt_sets is None else copy.deepcopy(prompt_sets)
    raw.update(prompt_sets=sets, strategies=strategies, output={"dir": str(out_dir), "run_id": run_id})
    if metrics is not None:  # the objective and the constraints are always scored
        raw["metrics"] = list(dict.fromkeys(list(metrics) + tcfg.metrics))
    return resolve_config(raw, f"{source} ({split})")


def _study(tcfg: TuneConfig, fam_index: int, fam: Any) -> Any:
    """A family's Optuna study: seeded TPE (constraints as trial constraints); a grid no
    larger than the budget is enqueued whole, in a seeded order, so every point runs once."""
    import optuna

    seed = tcfg.sampler_seed(fam_index, fam.key)
    grid = fam.grid_size
    if grid is not None and 0 < grid <= tcfg.trials:
        study = optuna.create_study(direction=tcfg.direction, sampler=optuna.samplers.RandomSampler(seed=seed))
        names = list(fam.space)
        points = list(itertools.product(*(fam.space[n].choices for n in names)))
        random.Random(seed).shuffle(points)
        for point in points:
            study.enqueue_trial(dict(zip(names, point)))
        return study
    return optuna.create_study(direction=tcfg.direction,
                               sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS))


def _suggest(trial: Any, fam: Any) -> dict[str, Any]:
    params = dict(fam.fixed)
    for name, s in fam.space.items():
        if s.kind == "choice":
            params[name] = trial.suggest_categorical(name, list(s.choices))
        elif s.kind == "int":
            params[name] = trial.suggest_int(name, int(s.low), int(s.high), log=s.log, step=int(s.step or 1))
        else:
            params[name] = trial.suggest_float(name, s.low, s.high, log=s.log, step=s.step)
    return params


def _mean(df: Any, metric: str) -> Value:
    if metric not in df or df.empty:
        return None
    v = per_prompt(df, metric)
    return float(v.mean()) if len(v) else None


def best_trial(trials: list[Trial], direction: str) -> Trial | None:
    """The best feasible trial in the objective's direction; ties go to the earlier trial."""
    ok = [t for t in trials if t.feasible and t.value is not None and not math.isnan(t.value)]
    if not ok:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(ok, key=lambda t: (sign * t.value, t.number))


def budget(tcfg: TuneConfig, fam: Any) -> int:
    """Trials for a family: the budget; a grid smaller than it runs whole; nothing to search: one."""
    if not fam.space:
        return 1
    grid = fam.grid_size
    return min(tcfg.trials, grid) if grid is not None else tcfg.trials


def run_tune(base: dict[str, Any], tcfg: TuneConfig, source: str, *, out: TextIO = sys.stdout,
             progress: bool = True, address: str | None = None, release: bool = True) -> TuneOutcome:
    """Run (or resume) the tune; ``release=False`` keeps the engines loaded for the caller's
    next run (a study runs several tunes on one model)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tid = tune_id(base, tcfg)
    root = Path((base.get("output") or {}).get("dir", "reports"))
    tune_dir = inside(root, root / tid)
    tune_dir.mkdir(parents=True, exist_ok=True)
    direction = tcfg.direction
    studies = {f.key: _study(tcfg, i, f) for i, f in enumerate(tcfg.families)}
    trials: dict[str, list[Trial]] = {f.key: [] for f in tcfg.families}
    rounds: list[RunOutcome] = []
    quiet = io.StringIO()
    try:
        for r in range(max(budget(tcfg, f) for f in tcfg.families)):
            asked = []
            for fam in tcfg.families:
                if len(trials[fam.key]) < budget(tcfg, fam):
                    ot = studies[fam.key].ask()
                    t = Trial(fam.key, ot.number, _suggest(ot, fam), f"{fam.key}#{ot.number}")
                    asked.append((fam, ot, t))
            run_id = f"round-{r:03d}"
            cfg = _run_config(base, tcfg, "dev", [{"name": fam.name, **t.params, "label": t.label}
                                                  for fam, _, t in asked], tune_dir / "dev", run_id, source)
            print(f"tune {tid}: round {r + 1}: {len(asked)} trial(s) on the dev split", file=out, flush=True)
            outcome = run(cfg, address=address, out=quiet, progress=progress, keep_engines=True)
            rounds.append(outcome)
            df = read_samples(outcome.run_dir)
            for fam, ot, t in asked:
                rows = df[df["strategy_label"] == t.label]
                t.run_id, t.value = run_id, _mean(rows, tcfg.objective)
                t.constraints = {c.metric: _mean(rows, c.metric) for c in tcfg.constraints}
                t.feasible = t.value is not None and all(c.holds(t.constraints[c.metric]) for c in tcfg.constraints)
                for c in tcfg.constraints:  # <= 0: feasible (TPE prefers feasible trials)
                    ot.set_constraint(c.metric, _violation(c, t.constraints[c.metric]))
                if t.value is None:
                    studies[fam.key].tell(ot, state=optuna.trial.TrialState.FAIL)
                else:
                    studies[fam.key].tell(ot, t.value)
                trials[fam.key].append(t)
            _write_state(tune_dir, tid, tcfg, trials, None, None)
        best = {f.key: best_trial(trials[f.key], direction) for f in tcfg.families}
        test = _run_test(base, tcfg, source, tune_dir, best, out=out, progress=progress, address=address)
    finally:
        if release:
            KEPT.release()
    plots = _sensitivity_plots(tune_dir, tcfg, trials)
    lb = None
    if test is not None:
        figures = [(f"{p.stem}: {tcfg.objective} on the dev trials (red: infeasible)",
                    base64.b64encode(p.read_bytes()).decode()) for p in plots]
        lb = build_leaderboard([test.run_dir])
        write_leaderboard(lb, tune_dir / "leaderboard", html_page=True,
                          figures=figures, figures_heading="Sensitivity: the objective against each searched parameter")
    _write_state(tune_dir, tid, tcfg, trials, best, test)
    _write_summary(tune_dir, tcfg, trials, best, test, plots)
    return TuneOutcome(tid, tune_dir, trials, best, rounds, test, lb)


def _violation(c: Any, value: Value) -> float:
    """Optuna's constraint value: <= 0 when the constraint holds."""
    if value is None or math.isnan(value):
        return 1.0
    return max((c.min - value) if c.min is not None else 0.0, (value - c.max) if c.max is not None else 0.0)


def _run_test(base, tcfg, source, tune_dir, best, *, out, progress, address) -> RunOutcome | None:
    fams = {f.key: f for f in tcfg.families}
    chosen = [(k, t) for k, t in best.items() if t is not None]
    for k, t in best.items():
        if t is None:
            print(f"tune: family {k!r} has no feasible trial; it is left out of the test run", file=out)
    if not chosen:
        return None
    strategies = [{"name": fams[k].name, **t.params, "label": k} for k, t in chosen]
    cfg = _run_config(base, tcfg, "test", strategies, tune_dir, "test", source)
    print(f"tune: the best of {len(chosen)} famil{'y' if len(chosen) == 1 else 'ies'} on the test split", file=out,
          flush=True)
    return run(cfg, address=address, out=out, progress=progress, keep_engines=True)


def run_replication(base: dict[str, Any], tcfg: TuneConfig, source: str, tune_dir: Path,
                    best: dict[str, Trial | None], prompt_sets: list[Any], *, out: TextIO = sys.stdout,
                    progress: bool = True, address: str | None = None) -> RunOutcome | None:
    """The chosen configuration of each family, unchanged, on other prompt sets (whole: the tune
    never saw them), with the test run's seeds: ``<tune>/replicate``, resumable like every run.
    None when no family has a feasible trial."""
    fams = {f.key: f for f in tcfg.families}
    chosen = [(k, t) for k, t in best.items() if t is not None]
    if not chosen:
        return None
    strategies = [{"name": fams[k].name, **t.params, "label": k} for k, t in chosen]
    cfg = _run_config(base, tcfg, "replicate", strategies, tune_dir, "replicate", source, prompt_sets)
    print(f"tune: the best of {len(chosen)} famil{'y' if len(chosen) == 1 else 'ies'} on the replication set(s)",
          file=out, flush=True)
    return run(cfg, address=address, out=out, progress=progress, keep_engines=True)


def _write_state(tune_dir: Path, tid: str, tcfg: TuneConfig, trials, best, test) -> None:
    state = {
        "tune_id": tid, "objective": tcfg.objective, "direction": tcfg.direction, "budget": tcfg.trials,
        "dev_fraction": tcfg.dev_fraction, "seed": tcfg.seed, "baseline": tcfg.baseline,
        "constraints": [{"metric": c.metric, "min": c.min, "max": c.max} for c in tcfg.constraints],
        "families": {k: {"trials": [t.as_dict() for t in ts],
                         "best": None if best is None or best.get(k) is None else best[k].as_dict()}
                     for k, ts in trials.items()},
        "status": "complete" if test is not None else "tuning",
        "test_run": None if test is None else test.run_id,
    }
    write_json_atomic(tune_dir / "tune.json", state)


def _paired_lines(tcfg: TuneConfig, df: Any) -> list[str]:
    if tcfg.baseline is None:
        return []
    base = df[df["strategy_label"] == tcfg.baseline]
    if base.empty:
        return [f"The baseline {tcfg.baseline} did not reach the test run."]
    lines = [f"Paired differences on the test split against `{tcfg.baseline}` ({tcfg.objective}, other minus "
             f"baseline, 95% bootstrap CI over prompts):", "", "| family | difference | CI |", "| --- | ---: | --- |"]
    for label in sorted(set(df["strategy_label"]) - {tcfg.baseline}):
        ci = paired_diff_ci(base, df[df["strategy_label"] == label], tcfg.objective)
        lines.append(f"| {label} | {ci.mean:+.3f} | [{ci.low:+.3f}, {ci.high:+.3f}] |")
    return lines


def _write_summary(tune_dir: Path, tcfg: TuneConfig, trials, best, test, plots: list[Path]) -> None:
    lines = [f"# Tune: {tcfg.objective} ({'higher' if tcfg.direction == 'maximize' else 'lower'} is better)", "",
             f"Budget: {tcfg.trials} trial(s) per family on the dev split ({tcfg.dev_fraction:g} of the prompts); "
             f"the best of each family on the test split.", "",
             "| family | trials | best dev value | best parameters | test value [95% CI] |",
             "| --- | ---: | ---: | --- | --- |"]
    df = read_samples(test.run_dir) if test is not None else None
    for key, ts in trials.items():
        b = best.get(key)
        test_cell = ""
        if b is not None and df is not None:
            ci = metric_ci(df[df["strategy_label"] == key], tcfg.objective)
            test_cell = f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]"
        lines.append(f"| {key} | {len(ts)} | {'' if b is None else f'{b.value:.3f}'} | "
                     f"{'' if b is None else json.dumps(b.params, sort_keys=True)} | {test_cell} |")
    if df is not None:
        lines += [""] + _paired_lines(tcfg, df)
    if plots:
        lines += ["", "## Sensitivity (dev trials; red: infeasible)", ""] + [f"![{p.stem}](sensitivity/{p.name})"
                                                                          for p in plots]
    (tune_dir / "tune.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _sensitivity_plots(tune_dir: Path, tcfg: TuneConfig, trials) -> list[Path]:
    """The objective against each searched parameter, one PNG per (family, parameter)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plots need the 'metrics' extra
        return []
    out = []
    folder = tune_dir / "sensitivity"
    for fam in tcfg.families:
        for param in fam.space:
            pts = [(t.params[param], t.value, t.feasible) for t in trials[fam.key] if t.value is not None]
            if len(pts) < 2:
                continue
            folder.mkdir(exist_ok=True)
            fig, ax = plt.subplots(figsize=(4.5, 3.2))
            xs = list(range(len(pts))) if fam.space[param].kind == "choice" else [p[0] for p in pts]
            ax.scatter(xs, [p[1] for p in pts], c=["tab:blue" if p[2] else "tab:red" for p in pts])
            if fam.space[param].kind == "choice":
                ax.set_xticks(xs, [str(p[0]) for p in pts])
            ax.set_xlabel(param, usetex=False)
            ax.set_ylabel(tcfg.objective)
            ax.set_title(f"{fam.key}: {tcfg.objective} against {param}", fontsize=9)
            fig.tight_layout()
            path = folder / f"{slugify(fam.key)}-{slugify(param)}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            out.append(path)
    return out

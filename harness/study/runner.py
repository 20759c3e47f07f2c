"""``deceval study CONFIG``: every (model, part) tuned with one budget per family, the
dependency probe per model, then each claim decided from the test splits.

Flow, per model (its engines stay loaded across its parts): ``run_tune`` for each part, into
``<output>/<study>/``; then the probe. A study that stops part-way resumes by running it again:
the tunes resume their rounds (finished units are checked and skipped), a finished probe
is read back. ``study.json`` holds every figure the report shows; ``study.md`` (and, with
``--doc``, a copy beside the project's docs) is written from it alone.

A claim's verdict comes from its paired tests on the test splits, Holm-adjusted across every
test of the study, with equivalence (TOST) against the declared smallest effect and the
detectable effect at the size run (:mod:`harness.study.decide`). With a part's ``replicate``
prompt sets, the chosen configuration of each family then runs on them too
(``<tune>/replicate``), the same tests are decided there, and the report's replication table
says whether each verdict agrees. The probe claim: "+" when the effective length's CI overlaps
the seed formula's range over m (n ln(m h) / ln V for m = 1..4), "-" when it does not.

Resume: every stage is checked before it runs again. The tunes' dev rounds, test and
replication runs are resumable Parquet units (finished ones are verified and skipped), a
finished probe is read back, and each stage's seconds add up over the invocations.
``stages.json`` keeps them as each stage ends, and names the stage an invocation is in: one
that ended inside a stage (killed, crashed) is charged to it up to its last written file.
"""

from __future__ import annotations

import base64
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from harness.analysis.leaderboard import build_leaderboard, plots
from harness.analysis.stats import PROMPT_KEY, paired_diff_ci, per_prompt
from harness.driver.placement import KEPT
from harness.hardware import cpu_info
from harness.probe import ProbeResult, run_probe
from harness.report import inside, read_samples, write_json_atomic
from harness.study.config import Claim, StudyConfig
from harness.study.decide import MIN_PAIRS, VERDICTS, decide_tests, replication_table, verdict
from harness.tune import run_replication, run_tune
from harness.tune.tuner import TuneOutcome

__all__ = ["MIN_PAIRS", "VERDICTS", "StudyOutcome", "decide", "evaluate", "probe_sign", "run_study", "sign", "verdict"]


@dataclass
class StudyOutcome:
    study_dir: Path
    results: dict[str, Any]
    ok: bool


def cpu_line() -> str:
    c = cpu_info()
    return f"{c.model}, {c.cores} cores, {c.kind}{', native bf16' if c.native_bf16 else ''}"


def sign(low: float, high: float, expect: str, n: int = MIN_PAIRS) -> str:
    """For the focus findings (no claim rests on it): '+' when a 95% CI is wholly on the
    predicted side of 0, '-' wholly on the other, else '0' (also with fewer than MIN_PAIRS
    prompts)."""
    if math.isnan(low) or math.isnan(high) or n < MIN_PAIRS:
        return "0"
    if expect == "higher":
        return "+" if low > 0 else "-" if high < 0 else "0"
    return "+" if high < 0 else "-" if low > 0 else "0"


def probe_sign(effective_ci: tuple[float, float], seed_lengths: dict[str, float]) -> str:
    lo, hi = effective_ci
    return "+" if lo <= max(seed_lengths.values()) and hi >= min(seed_lengths.values()) else "-"


def _stage(stages: dict[str, Any], key: str, seconds: float, computed: bool) -> None:
    """A stage's compute time: added to what earlier invocations spent on it; one that only
    read back finished work keeps the earlier figure."""
    prev = stages.get(key, {})
    if computed or not prev:
        stages[key] = {"seconds": round(prev.get("seconds", 0.0) + seconds, 1) if computed else round(seconds, 1),
                       "cpu": cpu_line(), "resumed": bool(prev)}
        if prev.get("interrupted"):
            stages[key]["interrupted"] = True


#: Stage times as each stage ends, and the stage in progress (``harness.study.runner``'s docstring).
STAGES_FILE = "stages.json"


def _last_write(folder: Path) -> float:
    return max((f.stat().st_mtime for f in folder.rglob("*") if f.is_file() and f.name != STAGES_FILE), default=0.0)


def load_stages(study_dir: Path, prev: dict[str, Any]) -> dict[str, Any]:
    """The stage times of earlier invocations; an invocation that ended inside a stage is
    charged to it from the stage's start to the last file it wrote there."""
    try:
        saved = json.loads((study_dir / STAGES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return dict(prev.get("stages", {}))
    stages = dict(saved.get("stages", {}))
    running = saved.get("running")
    if running:
        spent = _last_write(study_dir) - float(running["since"])
        if spent > 0:
            _stage(stages, running["key"], spent, True)
            stages[running["key"]]["interrupted"] = True
    return stages


def _save_stages(study_dir: Path, stages: dict[str, Any], running: str | None = None) -> None:
    state: dict[str, Any] = {"stages": stages}
    if running:
        state["running"] = {"key": running, "since": time.time()}
    write_json_atomic(study_dir / STAGES_FILE, state)


def run_study(cfg: StudyConfig, *, out: TextIO = sys.stdout, progress: bool = True,
              address: str | None = None) -> StudyOutcome:
    root = Path(cfg.output_dir)
    study_dir = inside(root, root / cfg.name)
    study_dir.mkdir(parents=True, exist_ok=True)
    try:
        prev = json.loads((study_dir / "study.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        prev = {}
    stages = load_stages(study_dir, prev)
    tunes: dict[tuple[str, str], TuneOutcome] = {}
    replicas: dict[tuple[str, str], Any] = {}
    probes: dict[str, ProbeResult] = {}
    t_all = time.perf_counter()
    try:
        for model in cfg.models:
            for part in cfg.parts:
                base, tcfg = cfg.tunes[(model, part)]
                base = {**base, "output": {"dir": str(study_dir)}}
                print(f"study {cfg.name}: {model}, {part}: tuning {len(tcfg.families)} families, {tcfg.trials} "
                      f"trial(s) each, objective {tcfg.objective}", file=out, flush=True)
                t0 = time.perf_counter()
                _save_stages(study_dir, stages, f"{model}/{part}")
                oc = run_tune(base, tcfg, cfg.source, out=out, progress=progress, address=address, release=False)
                runs = oc.rounds + ([oc.test] if oc.test else [])
                _stage(stages, f"{model}/{part}", time.perf_counter() - t0, any(r.units_done for r in runs))
                _save_stages(study_dir, stages)
                tunes[(model, part)] = oc
                if part in cfg.replicate:
                    t0 = time.perf_counter()
                    _save_stages(study_dir, stages, f"{model}/{part}/replicate")
                    rep = run_replication(base, tcfg, cfg.source, oc.tune_dir, oc.best, cfg.replicate[part], out=out,
                                          progress=progress, address=address)
                    _stage(stages, f"{model}/{part}/replicate", time.perf_counter() - t0,
                           rep is not None and bool(rep.units_done))
                    _save_stages(study_dir, stages)
                    replicas[(model, part)] = rep
            KEPT.release()  # the probe runs in this process; the engines' cores are free again
            t0 = time.perf_counter()
            _save_stages(study_dir, stages, f"{model}/probe")
            probes[model] = run_probe(cfg.probe_config(model), study_dir,
                                      log=lambda m: print(m, file=out, flush=True))
            _stage(stages, f"{model}/probe", time.perf_counter() - t0, not probes[model].reused)
            _save_stages(study_dir, stages)
    finally:
        KEPT.release()
    results = evaluate(cfg, tunes, probes, study_dir, replicas)
    results["stages"] = stages
    results["this_invocation_seconds"] = round(time.perf_counter() - t_all, 1)
    write_json_atomic(study_dir / "study.json", results)
    ok = all(oc.test is not None and oc.test.ok and all(r.ok for r in oc.rounds) for oc in tunes.values()) \
        and all(r is not None and r.ok for r in replicas.values())
    return StudyOutcome(study_dir, results, ok)


def _ci_dict(ci: Any) -> dict[str, Any]:
    return {"diff": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n}


def _save_png(b64: str, path: Path) -> str:
    path.write_bytes(base64.b64decode(b64))
    return path.name


def evaluate(cfg: StudyConfig, tunes: dict[tuple[str, str], TuneOutcome], probes: dict[str, ProbeResult],
             study_dir: Path, replicas: dict[tuple[str, str], Any] | None = None) -> dict[str, Any]:
    """Everything the report shows, from the tunes' test runs, the replication runs and the
    probes."""
    figures = study_dir / "figures"
    figures.mkdir(exist_ok=True)
    samples, rep_samples, parts_out = {}, {}, {}
    rep_boards = {}
    for (model, part), rep in (replicas or {}).items():
        if rep is not None:
            rep_boards[f"{model}/{part}"] = build_leaderboard([rep.run_dir])
            rep_samples[f"{model}/{part}"] = rep_boards[f"{model}/{part}"].samples
    for (model, part), oc in tunes.items():
        tcfg = cfg.tunes[(model, part)][1]
        key = f"{model}/{part}"
        entry: dict[str, Any] = {"model": model, "part": part, "tune_dir": str(oc.tune_dir), "objective": tcfg.objective,
                                 "direction": tcfg.direction, "budget": tcfg.trials, "dev_fraction": tcfg.dev_fraction,
                                 "constraints": [{"metric": c.metric, "min": c.min, "max": c.max}
                                                 for c in tcfg.constraints],
                                 "families": {}, "leaderboard": [], "figures": {}}
        for fam in tcfg.families:
            b = oc.best.get(fam.key)
            entry["families"][fam.key] = {
                "strategy": fam.name, "searched": {n: _space(s) for n, s in fam.space.items()}, "fixed": fam.fixed,
                "trials": [t.as_dict() for t in oc.trials[fam.key]],
                "best_params": None if b is None else b.params, "best_dev_value": None if b is None else b.value}
        if oc.test is not None:
            lb = oc.leaderboard if oc.leaderboard is not None else build_leaderboard([oc.test.run_dir])
            df = lb.samples  # the test run's rows, read once by the tune's leaderboard
            samples[key] = df
            dev = read_samples([r.run_dir for r in oc.rounds])
            entry["test_run"] = str(oc.test.run_dir)
            entry["test_prompts"] = int(df[PROMPT_KEY].drop_duplicates().shape[0])
            entry["dev_prompts"] = int(dev[PROMPT_KEY].drop_duplicates().shape[0])
            entry["generations"] = int(len(dev) + len(df) + len(rep_samples.get(key, ())))
            for fam_key, fam_entry in entry["families"].items():
                test_value = _objective(df[df["strategy_label"] == fam_key], tcfg.objective)
                fam_entry["test_value"] = test_value
                dev_value = fam_entry["best_dev_value"]
                fam_entry["dev_test_gap"] = None if test_value is None or dev_value is None else test_value - dev_value
            if key in rep_samples:
                rdf = rep_samples[key]
                entry["replicate_prompts"] = int(rdf[PROMPT_KEY].drop_duplicates().shape[0])
                entry["replicate_sets"] = sorted(set(rdf["prompt_set"]))
                # descriptive: metrics a replication set alone has (MAUVE needs human references) show here
                entry["replicate_leaderboard"] = json.loads(rep_boards[key].table.to_json(orient="records"))
            entry["leaderboard"] = json.loads(lb.table.to_json(orient="records"))
            for title, b64 in plots(lb, model):
                if title.startswith("Quality"):
                    entry["figures"]["pareto"] = _save_png(b64, figures / f"pareto-{model}-{part}.png")
                    entry["figures"]["pareto_title"] = title
        sens = sensitivity_grid(tcfg, oc, figures / f"sensitivity-{model}-{part}.png", f"{model}, {part}")
        if sens:
            entry["figures"]["sensitivity"] = sens
        parts_out[key] = entry
    probes_out = {}
    for model, res in probes.items():
        curve_png = res.out_dir / "curve.png"
        fig = None
        if curve_png.is_file():
            fig = f"probe-{model}.png"
            (figures / fig).write_bytes(curve_png.read_bytes())
        probes_out[model] = {**res.as_dict(), "out_dir": str(res.out_dir), "figure": fig,
                             "sign": probe_sign(res.effective_ci, res.seed_lengths)}
    models = list(cfg.models)
    tests = decide_tests(cfg.claims, samples, models, cfg.smallest_effect, cfg.alpha, cfg.power)
    claims = [decide(c, tests.get(c.id, []), probes_out, models) for c in cfg.claims]
    out = {"study": cfg.name, "description": cfg.description, "source": cfg.source, "cpu": cpu_line(),
           "models": models, "parts": {p: {k: v for k, v in spec.items()} for p, spec in cfg.parts.items()},
           "alpha": cfg.alpha, "power": cfg.power, "smallest_effect": cfg.smallest_effect, "search": cfg.search,
           "tunes": parts_out, "probes": probes_out, "claims": claims,
           "focus": focus_findings(cfg, samples, parts_out)}
    if rep_samples:
        rtests = decide_tests(cfg.claims, rep_samples, models, cfg.smallest_effect, cfg.alpha, cfg.power)
        out["replication"] = {"parts": sorted(cfg.replicate), "claims": {c.id: verdict([r["sign"] for r in rows])
                                                                         for c in cfg.claims
                                                                         if (rows := rtests.get(c.id))},
                              "tests": replication_table(tests, rtests, {k.split("/")[1] for k in rep_samples})}
    return out


def _objective(df: Any, metric: str) -> float | None:
    """The objective's mean over prompts (as the tune scores a trial), None with no value."""
    if df.empty or metric not in df:
        return None
    v = per_prompt(df, metric)
    return float(v.mean()) if len(v) else None


def _space(s: Any) -> Any:
    return list(s.choices) if s.kind == "choice" else {"low": s.low, "high": s.high, "log": s.log}


def decide(claim: Claim, tests: list[dict[str, Any]], probes: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """A claim's verdict: from its decided paired tests (:func:`harness.study.decide.decide_tests`)
    or, for the probe claim, the probes."""
    rows = list(tests)
    if claim.probe:
        for model in models:
            p = probes.get(model)
            rows.append({"model": model, "sign": p["sign"] if p else "0",
                         "effective_length": None if p is None else p["effective_length"],
                         "effective_length_ci": None if p is None else p["effective_length_ci"],
                         "seed_dependency_length": None if p is None else p["seed_dependency_length"]})
    return {"id": claim.id, "text": claim.text, "verdict": verdict([r["sign"] for r in rows]), "rows": rows}


def focus_findings(cfg: StudyConfig, samples: dict[str, Any], parts: dict[str, Any]) -> dict[str, Any]:
    """For each focus family and (model, part): the families significantly better on the
    part's objective (paired CI), and its most repetitive test completion."""
    out: dict[str, Any] = {}
    for fam in cfg.focus:
        entries = []
        for key, df in samples.items():
            objective, direction = parts[key]["objective"], parts[key]["direction"]
            mine = df[df["strategy_label"] == fam]
            if mine.empty:
                continue
            better = []
            for other in sorted(set(df["strategy_label"]) - {fam}):
                ci = paired_diff_ci(mine, df[df["strategy_label"] == other], objective)
                if sign(ci.low, ci.high, "higher" if direction == "maximize" else "lower", ci.n) == "+":
                    better.append({"family": other, **_ci_dict(ci)})
            worst = None
            if "rep_2" in mine and mine["rep_2"].notna().any():
                r = mine.loc[mine["rep_2"].idxmax()]
                worst = {"prompt_id": r["prompt_id"], "prompt": r["prompt"], "completion": r["completion"],
                         "rep_2": float(r["rep_2"])}
            entries.append({"model": parts[key]["model"], "part": parts[key]["part"], "objective": objective,
                            "better_families": better, "most_repetitive": worst})
        out[fam] = entries
    return out


def sensitivity_grid(tcfg: Any, oc: TuneOutcome, path: Path, title: str) -> str | None:
    """One figure: the objective against each searched parameter of each family (dev trials)."""
    panels = [(f, p) for f in tcfg.families for p in f.space
              if sum(t.value is not None for t in oc.trials[f.key]) >= 2]
    if not panels:
        return None
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    with matplotlib.rc_context({"text.usetex": False}):
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
        for ax, (fam, param) in zip(axes.flat, panels):
            pts = [(t.params[param], t.value, t.feasible) for t in oc.trials[fam.key] if t.value is not None]
            choice = fam.space[param].kind == "choice"
            labels = sorted({str(x) for x, _, _ in pts}) if choice else []
            xs = [labels.index(str(x)) if choice else x for x, _, _ in pts]
            ax.scatter(xs, [v for _, v, _ in pts], c=["tab:blue" if ok else "tab:red" for _, _, ok in pts], s=18)
            if choice:
                ax.set_xticks(range(len(labels)), labels)
            ax.set_title(f"{fam.key}: {param}", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.suptitle(f"{title}: dev {tcfg.objective} against each searched parameter (red: infeasible)", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return path.name

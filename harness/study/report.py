"""The study's report, written from ``study.json`` alone (no number typed by hand): the
verdict on each claim with its paired CIs, the dependency probe, and per model and task the
tuned parameters, the test-split leaderboard, the Pareto and sensitivity plots, and where
the focus families lose."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from harness.analysis.leaderboard import md_escape
from harness.study.decide import MIN_PAIRS, SIGN_WORDS
from harness.tune.tuner import TPE_STARTUP_TRIALS


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    return f"{x:.{digits}f}"


def _len(x: Any, largest: int) -> str:
    if x is None or x == "inf" or (isinstance(x, float) and math.isinf(x)):
        return f"> {largest}"
    return f"{x:g}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _claim_section(c: dict[str, Any], results: dict[str, Any]) -> list[str]:
    out = [f"### Claim ({c['id']}): {md_escape(c['text'])}", "", f"**Verdict: {c['verdict']}.**", ""]
    if c["rows"] and "effective_length" in c["rows"][0]:
        out += ["| model | effective length [95% CI] | seed n ln(mh)/ln V (m=1, 2, 4) | |", "| --- | --- | --- | --- |"]
        for r in c["rows"]:
            p = results["probes"].get(r["model"])
            if p is None:
                out.append(f"| {r['model']} | not measured | | |")
                continue
            largest = p["config"]["ks"][-1]
            lo, hi = p["effective_length_ci"]
            seeds = ", ".join(f"{v:.1f}" for v in p["seed_dependency_length"].values())
            word = "overlaps the seed's range" if r["sign"] == "+" else "outside the seed's range"
            at = _kl_at(p["curve"], p["seed_dependency_length"]["m=2"])
            out.append(f"| {r['model']} | {_len(p['effective_length'], largest)} [{_len(lo, largest)}, "
                       f"{_len(hi, largest)}] | {seeds} | {word}; at k = {at['k']} (nearest to m=2) the mean KL is "
                       f"{at['mean_kl']:.3f} nats |")
        return out + [""]
    out += ["| model | test | treatment - control | 95% CI | adjusted CI | p (Holm) | equivalence p (Holm) | "
            "prompts | detectable at this size | |",
            "| --- | --- | ---: | --- | --- | --- | --- | ---: | --- | --- |"]
    for r in c["rows"]:
        test = f"{r['part']}: {r['treatment']} vs {r['control']}, {r['metric']} ({r['expect']} predicted)"
        if "missing" in r:
            out.append(f"| {r['model']} | {test} | | | | | | | | {r['missing']} |")
        elif "p_holm" not in r:  # a study.json written before the tests were adjusted
            out.append(f"| {r['model']} | {test} | {r['diff']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}] (bootstrap) | "
                       f"| | | {r['n']} | | {r['sign']} (unadjusted; run the study again) |")
        else:
            out.append(f"| {r['model']} | {test} | {r['diff']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}] | "
                       f"[{r['adj_low']:+.3f}, {r['adj_high']:+.3f}] | {_p(r['p'])} ({_p(r['p_holm'])}) | "
                       f"{_p(r['p_equiv'])} ({_p(r['p_equiv_holm'])}) | {r['n']} | {_power_cell(r)} | "
                       f"{sign_word(r)} |")
    return out + [""]


def _p(p: Any) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def sign_word(r: dict[str, Any]) -> str:
    """A decided test's verdict in words, with the smallest effect or the detectable one."""
    if r["sign"] == "=":
        return f"equivalent (no effect larger than {r['smallest_effect']:g})"
    if r["sign"] == "0":
        mde = r.get("mde")
        return ("undecided at this size" + ("" if mde is None or math.isnan(mde) else
                                            f" (detectable: {mde:.3g})"))
    return SIGN_WORDS[r["sign"]]


def underpowered(r: dict[str, Any]) -> bool:
    if "missing" in r or "smallest_effect" not in r or "mde" not in r:
        return False
    mde = r["mde"]
    return mde is None or math.isnan(mde) or mde > r["smallest_effect"]


def _power_cell(r: dict[str, Any]) -> str:
    """The detectable effect against the declared one, and the prompts the declared one needs."""
    mde, need = r.get("mde"), r.get("n_needed")
    need_s = "n/a (no spread in the data)" if need is None else str(need)
    if mde is None or math.isnan(mde):
        return f"none (too few prompts for any effect); {r['smallest_effect']:g} needs {need_s}"
    word = "underpowered" if mde > r["smallest_effect"] else "powered"
    return f"{mde:.3g} vs {r['smallest_effect']:g}: {word}" + (f" ({mde / r['smallest_effect']:.1f}x; needs {need_s})"
                                                             if word == "underpowered" else "")


def _replication(results: dict[str, Any]) -> list[str]:
    rep = results.get("replication")
    if not rep:
        return ["No replication: no part names `replicate` prompt sets.", ""]
    out = ["## Replication", "",
           f"The chosen configuration of each family, unchanged, on prompt sets the tune never saw (parts: "
           f"{', '.join(rep['parts'])}), decided by the same rules (Holm across the replicated tests).", "",
           "| claim | verdict | on the replication |", "| --- | --- | --- |"]
    verdicts = {c["id"]: c["verdict"] for c in results["claims"]}
    out += [f"| ({cid}) | {verdicts.get(cid, 'n/a')} | {v} |" for cid, v in rep["claims"].items()]
    out += ["", "| claim | model | test | test split | replication | agrees |", "| --- | --- | --- | --- | --- | --- |"]
    for t in rep["tests"]:
        test = f"{t['part']}: {t['treatment']} vs {t['control']}, {t['metric']}"
        if t["replica_sign"] is None:
            out.append(f"| ({t['claim']}) | {t['model']} | {test} | {SIGN_WORDS[t['sign']]} | not replicated | |")
            continue
        out.append(f"| ({t['claim']}) | {t['model']} | {test} | {SIGN_WORDS[t['sign']]} ({_num(t['diff'], 3)}) | "
                   f"{SIGN_WORDS[t['replica_sign']]} ({_num(t.get('replica_diff'), 3)}, {t.get('replica_n')} prompts) | "
                   f"{'yes' if t['agree'] else 'no'} |")
    agree = [t["agree"] for t in rep["tests"] if t["agree"] is not None]
    out += ["", f"{sum(agree)} of {len(agree)} replicated tests agree.", ""]
    return out


def _leaderboard(entry: dict[str, Any], metrics: list[str]) -> list[str]:
    table = entry["leaderboard"]
    if not table:
        return ["No test run."]
    present = [m for m in metrics if any(r["metric"] == m for r in table)]
    fams = list(entry["families"])
    head = "| family | " + " | ".join(f"{m} ({'higher' if _dir(table, m) == 'higher' else 'lower' if _dir(table, m) == 'lower' else 'info'})"
                                    for m in present) + " |"
    lines = [head, "| --- |" + " ---: |" * len(present)]
    for f in fams:
        cells = []
        for m in present:
            r = next((r for r in table if r["strategy"] == f and r["metric"] == m), None)
            ci = "" if r is None or (r.get("ci_low") is None and r.get("ci_high") is None) else \
                f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]"  # a per-unit metric has none
            cells.append("" if r is None else f"{_num(r['mean'])}{ci}"
                         + ("" if r.get("rank") is None else f" #{int(r['rank'])}"))
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return lines


def _dir(table: list[dict[str, Any]], metric: str) -> str:
    return next((r["direction"] for r in table if r["metric"] == metric), "none")


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _searched(space: Any) -> str:
    if isinstance(space, list):
        return "{" + ", ".join(_value(v) for v in space) + "}"
    return f"[{_value(space['low'])}, {_value(space['high'])}]" + (" (log)" if space.get("log") else "")


def _tuned(entry: dict[str, Any]) -> list[str]:
    lines = ["| family | searched | trials | best dev value | test value | test - dev | chosen parameters |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for key, f in entry["families"].items():
        searched = ", ".join(f"{n} in {_searched(s)}" for n, s in f["searched"].items()) or "nothing"
        best = f["best_params"]
        chosen = "no feasible trial" if best is None else (", ".join(f"{k}={_value(v)}" for k, v in sorted(best.items()))
                                                          or "(none)")
        gap = f.get("dev_test_gap")
        lines.append(f"| {key} | {md_escape(searched)} | {len(f['trials'])} | {_num(f['best_dev_value'])} | "
                     f"{_num(f.get('test_value'))} | {'n/a' if gap is None else f'{gap:+.3f}'} | {md_escape(chosen)} |")
    return lines


def _ranks_last(entry: dict[str, Any], family: str) -> list[str]:
    """The metrics of a part's test leaderboard on which ``family`` ranks last."""
    out = []
    for m in dict.fromkeys(r["metric"] for r in entry["leaderboard"]):
        ranked = [r for r in entry["leaderboard"] if r["metric"] == m and r.get("rank") is not None]
        mine = next((r for r in ranked if r["strategy"] == family), None)
        if mine and len(ranked) > 1 and mine["rank"] == max(r["rank"] for r in ranked) \
                and sum(r["rank"] == mine["rank"] for r in ranked) == 1:
            out.append(f"{m} ({_num(mine['mean'])})")
    return out


def _kl_at(curve: list[dict[str, Any]], length: float) -> dict[str, Any]:
    """The measured point whose k is nearest to ``length``."""
    return min(curve, key=lambda c: (abs(c["k"] - length), c["k"]))


def to_markdown(results: dict[str, Any], figures: str = "figures") -> str:
    stages = results.get("stages", {})
    total = sum(s["seconds"] for s in stages.values())
    cpus = sorted({s["cpu"] for s in stages.values()})
    stage_order = [f"{m}/{p}" for m in results["models"] for p in [*results["parts"], "probe"]]
    per_stage = ", ".join(f"{k} {_minutes(v['seconds'])}{'*' if v.get('interrupted') else ''}" for k, v in
                          sorted(stages.items(), key=lambda kv: stage_order.index(kv[0]) if kv[0] in stage_order else 99))
    if any(v.get("interrupted") for v in stages.values()):
        per_stage += "; * an invocation ended inside the stage and is counted up to the last file it wrote"
    lines = [f"# Study: {md_escape(results['study'])}", "",
             f"Generated by `deceval study {results['source']}` from the study's own report (`study.json`); every "
             f"number below comes from it. Do not edit it by hand: run the study again.", "",
             md_escape(results.get("description", "")), "",
             f"- Models: {', '.join(results['models'])}. Families are tuned with the same trial budget on the dev "
             f"split of each task, and the best of each family runs on the test split (a stable hash of each prompt "
             f"id decides its split), with the same seeds for all.",
             f"- Compute: {_minutes(total)} in all on {'; '.join(cpus) or 'unknown CPU'} ({per_stage}).", "",
             "## Verdicts", "", "| claim | verdict |", "| --- | --- |"]
    lines += [f"| ({c['id']}) {md_escape(c['text'])} | {c['verdict']} |" for c in results["claims"]]
    alpha, power = results.get("alpha", 0.05), results.get("power", 0.8)
    tests = [r for c in results["claims"] for r in c["rows"] if "expect" in r]
    m = max((r.get("m", 0) for r in tests), default=0)
    weak = [r for r in tests if underpowered(r)]
    effects = ", ".join(f"{k} {v:g}" for k, v in sorted(results.get("smallest_effect", {}).items()))
    lines += ["", f"Rule: per paired test and model, over test prompts (a prompt's samples averaged first), treatment "
              f"minus control: the paired t test (binary metrics: the exact McNemar test) and, against the declared "
              f"smallest effect of interest ({effects or 'none declared'}), the equivalence test (TOST). Holm's "
              f"method adjusts both across all {m} tests of the study (family-wise error {alpha:g}); the adjusted "
              f"interval is the Bonferroni one ({1 - alpha / max(m, 1):.4f} t interval), which holds for all tests at "
              f"once. A test is *as claimed* or *against the claim* when its Holm-adjusted p is <= {alpha:g} (by the "
              f"side of the difference), *equivalent* when its Holm-adjusted TOST p is, else *undecided at this size* "
              f"(as is a test over fewer than {MIN_PAIRS} prompts). *Detectable at this size*: the smallest true "
              f"difference the test finds with {power:.0%} power at alpha / m, with the spread it showed. A claim is "
              f"supported when every test is as claimed on every model, not supported when any is against it, *no "
              f"effect of interest* when none is against it and one is equivalent, and otherwise inconclusive at "
              f"this size. Claim (d): supported when the measured effective length's CI overlaps the seed formula's "
              f"values for m = 1..4.", ""]
    if weak:
        lines += [f"Underpowered: {len(weak)} of {len(tests)} tests cannot detect their declared smallest effect at "
                  f"the size run: " + "; ".join(
                      f"{r['model']} {r['part']} {r['treatment']} vs {r['control']} {r['metric']} "
                      f"(detects {_num(r.get('mde')).replace('n/a', 'nothing')}, declared {r['smallest_effect']:g}, needs "
                      f"{r.get('n_needed') or 'n/a'} test prompts, ran {r.get('n')})" for r in weak) + ".", ""]
    lines += _replication(results)
    lines += ["## The claims", ""]
    for c in results["claims"]:
        lines += _claim_section(c, results)
    lines += ["## Dependency probe", ""]
    for model in [m for m in results["models"] if m in results["probes"]]:
        p = results["probes"][model]
        cfg = p["config"]
        lines += [f"### {model}", "",
                  f"Mean KL(p(. | full context) || p(. | last k tokens)) over {len(p['texts'])} held-out texts "
                  f"(Python's documentation topics), the last {cfg['positions']} of {cfg['context']} tokens each; "
                  f"threshold {cfg['threshold']:g} nats.", "", "| k | mean KL [95% CI] |", "| ---: | --- |"]
        lines += [f"| {c['k']} | {c['mean_kl']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}] |" for c in p["curve"]]
        lo, hi = p["effective_length_ci"]
        largest = cfg["ks"][-1]
        lines += ["", f"Effective length: {_len(p['effective_length'], largest)} tokens [95% CI {_len(lo, largest)}, "
                      f"{_len(hi, largest)}]; the seed's n ln(m h) / ln V: "
                      + ", ".join(f"{m}: {v:.2f}" for m, v in p["seed_dependency_length"].items()) + ".", ""]
        if p.get("figure"):
            lines += [f"![{model}: KL against k]({figures}/{p['figure']})", ""]
    order = [f"{m}/{p}" for m in results["models"] for p in results["parts"]]
    for key, entry in sorted(results["tunes"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
        metrics = [entry["objective"]] + [m for m in results["parts"][entry["part"]].get("metrics", [])
                                          if m != entry["objective"]]
        cons = ", ".join(f"{c['metric']} {'>= ' + _num(c['min']) if c['min'] is not None else ''}"
                         f"{'<= ' + _num(c['max']) if c['max'] is not None else ''}" for c in entry["constraints"])
        lines += [f"## {entry['model']}: {entry['part']}", "",
                  f"Objective {entry['objective']} ({'higher' if entry['direction'] == 'maximize' else 'lower'} is "
                  f"better){', constraints ' + cons if cons else ''}; budget {entry['budget']} trial(s) per family on "
                  f"{entry.get('dev_prompts', 'n/a')} dev prompts; test split {entry.get('test_prompts', 'n/a')} prompts."
                  + (f" With {entry['budget']} trials, no more than TPE's {TPE_STARTUP_TRIALS} seeded start-up "
                     f"trials, every range is searched by seeded random draws (lists that fit the budget run whole): "
                     f"an equal-budget random search." if entry["budget"] <= TPE_STARTUP_TRIALS else
                     f" TPE searches after its {TPE_STARTUP_TRIALS} seeded random start-up trials.")
                  + " Each family's sampler seed derives from (study seed, part, model, family). *test - dev*: the "
                    "chosen configuration's objective on the test split minus its best dev value; a large drop is "
                    "the search fitting the dev prompts.",
                  "", "### Tuned parameters", ""] + _tuned(entry)
        ranked = sorted((r for r in entry["leaderboard"] if r["metric"] == entry["objective"]),
                        key=lambda r: (r.get("rank") or math.inf, r["strategy"]))
        if ranked:
            top = [r["strategy"] for r in ranked if r.get("rank") == ranked[0].get("rank")]
            bottom = [r["strategy"] for r in ranked if r.get("rank") == ranked[-1].get("rank")]
            lines += ["", f"On the test split, the best {entry['objective']}: {', '.join(top)} "
                          f"({_num(ranked[0]['mean'])} [{_num(ranked[0]['ci_low'])}, {_num(ranked[0]['ci_high'])}]); "
                          f"the lowest-ranked: {', '.join(bottom)} ({_num(ranked[-1]['mean'])}). Ranks are by the "
                          f"mean; the paired CIs above and in the claims say which gaps are more than noise."]
        lines += ["", "### Test-split leaderboard", "", "Mean over test prompts [95% bootstrap CI] #rank.", ""]
        lines += _leaderboard(entry, metrics) + [""]
        if entry.get("replicate_leaderboard"):
            lines += [f"### Replication-set leaderboard ({', '.join(entry.get('replicate_sets', []))})", "",
                      f"The chosen configurations on {entry.get('replicate_prompts', 'n/a')} prompts the tune never "
                      f"saw. A per-unit metric such as MAUVE has one value per family (no CI).", ""]
            lines += _leaderboard({**entry, "leaderboard": entry["replicate_leaderboard"]}, metrics) + [""]
        figs = entry.get("figures", {})
        if figs.get("pareto"):
            lines += [f"![{entry['model']} {entry['part']}: {figs['pareto_title']}]({figures}/{figs['pareto']})", ""]
        if figs.get("sensitivity"):
            lines += [f"![{entry['model']} {entry['part']}: sensitivity]({figures}/{figs['sensitivity']})", ""]
    for fam, entries in results.get("focus", {}).items():
        lines += [f"## Where {fam} loses", ""]
        for e in entries:
            better = ", ".join(f"{b['family']} ({b['diff']:+.3f} [{b['low']:+.3f}, {b['high']:+.3f}])"
                               for b in e["better_families"])
            last = _ranks_last(results["tunes"][f"{e['model']}/{e['part']}"], fam)
            lines.append(f"- {e['model']}, {e['part']}: families significantly better on {e['objective']}: "
                         f"{better or 'none'}; ranks last of all families on: {', '.join(last) or 'nothing'}.")
            w = e.get("most_repetitive")
            if w and w["rep_2"] > 0:
                lines.append(f"  Its most repetitive test completion (rep_2 {w['rep_2']:.1f}), for "
                             f"{json.dumps(w['prompt'])[:120]}: `{_code(w['completion'])}`")
        lines.append("")
    lines += ["## Scaling up", "", "docs/study.md says how to size a study from a pilot (`--pilot N`, then `--plan`) "
              "and how to run it larger on a cluster.", ""]
    return "\n".join(lines)


def _code(text: Any) -> str:
    """A completion shown inline: one line, no backticks, at most 200 characters."""
    s = " ".join(str(text).split()).replace("`", "'")
    return s[:200] + ("..." if len(s) > 200 else "")


def write_report(results: dict[str, Any], study_dir: Path, doc: Path | None = None) -> list[Path]:
    """study.md beside study.json; with ``doc``, the same report at that path and its figures
    in a folder of the doc's stem next to it (docs/study-seed.md -> docs/study-seed/)."""
    written = [study_dir / "study.md"]
    written[0].write_text(to_markdown(results, "figures"), encoding="utf-8")
    if doc is not None:
        folder = doc.parent / doc.stem
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        for png in (study_dir / "figures").glob("*.png"):
            shutil.copyfile(png, folder / png.name)
        doc.write_text(to_markdown(results, doc.stem), encoding="utf-8")
        written.append(doc)
    return written

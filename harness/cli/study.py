"""``deceval study CONFIG``: a study's tunes and probes, then its report and verdicts."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from harness.cli.tune import local_only
from harness.errors import ConfigError
from harness.report import write_json_atomic
from harness.study import load_study_config, run_study, write_report
from harness.study.plan import plan, plan_text


def _cmd_plan(cfg, args: argparse.Namespace) -> int:
    pilot_dir = Path(args.pilot_dir) if args.pilot_dir else Path(cfg.output_dir) / f"{cfg.name}-pilot"
    try:
        pilot = json.loads((pilot_dir / "study.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"--plan: no readable {pilot_dir / 'study.json'}; run the pilot first: deceval study "
                          f"{args.config} --pilot 40 (or give --pilot-dir)") from None
    fractions = {part: tcfg.dev_fraction for (_, part), (_, tcfg) in cfg.tunes.items()}
    p = plan(pilot, cfg.smallest_effect, cfg.alpha, cfg.power, fractions)
    print(plan_text(p))
    out = Path(cfg.output_dir) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "plan.json", {**p, "pilot": str(pilot_dir)})
    print(f"study: {out / 'plan.json'}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    cfg = load_study_config(args.config, pilot=args.pilot)
    if args.output_dir:
        cfg = replace(cfg, output_dir=args.output_dir)
    local_only("study", cfg.output_dir)
    if args.plan:
        if args.pilot is not None:
            raise ConfigError("--plan reads a finished pilot; run --pilot N first, then --plan (not both at once)")
        return _cmd_plan(cfg, args)
    study_dir = Path(cfg.output_dir) / cfg.name
    print(f"study {cfg.name}: {len(cfg.models)} model(s) x {len(cfg.parts)} part(s) ({', '.join(cfg.parts)}), "
          f"{len(next(iter(cfg.tunes.values()))[1].families)} families, {len(cfg.claims)} claim(s); report in "
          f"{study_dir}")
    if args.dry_run:
        return 0
    doc = Path(args.doc) if args.doc else None
    if doc is not None and doc.suffix != ".md":
        raise ConfigError(f"--doc {args.doc!r}: expected a Markdown path ending in .md")
    ok = True
    if args.report_only:
        try:
            results = json.loads((study_dir / "study.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ConfigError(f"--report-only: no readable {study_dir / 'study.json'}; run the study first") from None
    else:
        outcome = run_study(cfg, address=args.address, progress=not args.no_progress)
        results, ok = outcome.results, outcome.ok
    for path in write_report(results, study_dir, doc):
        print(f"study: {path}")
    for c in results["claims"]:
        print(f"  ({c['id']}) {c['verdict']}: {c['text']}")
    return 0 if ok else 1


def add_study_command(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("study", help="run a study (tunes on each model and task, the dependency probe) and decide "
                                     "its claims from the test splits; rerun to resume")
    s.add_argument("config", help="a study file (see configs/study-seed.yaml)")
    s.add_argument("--doc", help="also write the report to this .md path, its figures in a folder of its name")
    s.add_argument("--output-dir", help="where the study folder goes (default: the file's output.dir)")
    s.add_argument("--address", help="a Ray cluster to run on (default: a local Ray)")
    s.add_argument("--dry-run", action="store_true", help="check the whole study file and stop")
    s.add_argument("--report-only", action="store_true", help="rewrite the report from study.json, run nothing")
    s.add_argument("--pilot", type=int, metavar="N", help="run the study's pilot: the same study as <name>-pilot with "
                                                          "every prompt set cut to N prompts")
    s.add_argument("--plan", action="store_true", help="from the pilot, print the prompts each claim test needs to "
                                                       "detect its smallest effect at the study's power, and the "
                                                       "compute; writes <study>/plan.json")
    s.add_argument("--pilot-dir", help="with --plan: the pilot's study folder (default <output>/<name>-pilot)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_study)

"""``deceval study CONFIG``: a study's tunes and probes, then its report and verdicts."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from harness.errors import ConfigError
from harness.study import load_study_config, run_study, write_report


def _cmd_study(args: argparse.Namespace) -> int:
    cfg = load_study_config(args.config)
    if args.output_dir:
        cfg = replace(cfg, output_dir=args.output_dir)
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
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_study)

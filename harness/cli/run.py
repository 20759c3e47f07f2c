"""CLI commands that run a config: ``run`` and ``validate``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from harness.analysis.tables import format_table, summarize
from harness.config import check_metric_plugins, check_planned_rows, load_config
from harness.driver.runner import describe_engine_costs, describe_engines, run
from harness.metrics import METRICS
from harness.metrics.sandbox import ALLOW_UNSANDBOXED_ENV, execution_mode, sandbox_problem
from harness.plan import make_plan, metric_names
from harness.tasks import HUMANEVAL_SET, load_prompt_set


def _cmd_run(args: argparse.Namespace) -> int:

    cfg = load_config(args.config)
    _check_before_run(cfg, force=args.force)
    _check_code_sandbox(cfg, args.allow_unsandboxed_code)
    if args.output_dir:
        cfg = replace(cfg, output_dir=args.output_dir)
    outcome = run(cfg, address=args.address, run_id=args.resume, verbose=args.verbose, progress=not args.no_progress)
    print(f"\nreport: {outcome.run_dir}  ({outcome.units_done} unit(s) run, {outcome.units_skipped} skipped, "
          f"{len(outcome.units_failed)} failed, {outcome.seconds:.1f} s)")
    if outcome.engines:
        print(describe_engines(outcome.engines))
    if outcome.engine_costs:
        print(describe_engine_costs(outcome.engine_costs))
    print(format_table(summarize(outcome.run_dir)))
    if outcome.units_failed:
        print(f"\n{len(outcome.units_failed)} unit(s) failed after retries:", file=sys.stderr)
        for f in outcome.units_failed:
            print(f"  {f['model']} / {f['strategy']} ({f['unit_id']}, {f['attempts']} attempts): {f['error'][:300]}",
                  file=sys.stderr)
        return 1
    return 0


def _check_code_sandbox(cfg, allow_unsandboxed: bool) -> str | None:
    """Before any engine starts: a run that will execute generated code (a code metric on the
    humaneval set) needs the bubblewrap sandbox, or the user's explicit
    ``--allow-unsandboxed-code``; else SandboxUnavailable says how to install bubblewrap.
    Returns the mode code will run in ("bwrap" or "unsandboxed"), None when no code runs."""


    if allow_unsandboxed:
        os.environ[ALLOW_UNSANDBOXED_ENV] = "1"  # read where the rows are scored
    names = metric_names(cfg)
    if not (any(METRICS.get(m).runs_code for m in names if m in METRICS)
            and any(p.name == HUMANEVAL_SET for p in cfg.prompt_sets)):
        return None
    mode = execution_mode()
    if mode == "unsandboxed":
        print(f"warning: {sandbox_problem()}; generated code (HumanEval completions) runs as a plain subprocess "
              f"with rlimits, NOT in the sandbox: it shares this machine's network, files and processes",
              file=sys.stderr)
    return mode


def _check_before_run(cfg, force: bool) -> None:
    """What validation leaves to run time: plugin metrics are Metrics; the plan's size."""
    check_metric_plugins(cfg)
    if not force:
        _check_plan_size(cfg)


def _check_plan_size(cfg, force: bool = False, sets=None) -> int:
    """Planned rows of ``cfg``; ConfigError above harness.config.MAX_PLANNED_ROWS unless ``force``."""

    sets = [load_prompt_set(p) for p in cfg.prompt_sets] if sets is None else sets
    return check_planned_rows(cfg, sum(len(s.prompts) for s in sets), force=force)


def _shown_list(items: list[str], limit: int = 20) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _cmd_validate(args: argparse.Namespace) -> int:

    cfg = load_config(args.config)
    sets = [load_prompt_set(p) for p in cfg.prompt_sets]
    rows = _check_plan_size(cfg, args.force, sets)
    units = make_plan(cfg, sets)
    bad = sum(1 for s in sets for p in s.prompts if p.error)
    print(f"{cfg.source}: valid. run id {cfg.run_id}")
    print(f"  models: {_shown_list([f'{m.name} ({m.ref}, x{m.replicas})' for m in cfg.models])}")
    print(f"  prompt sets: {_shown_list([f'{s.name} ({len(s.prompts)})' for s in sets])}"
          + (f"; {bad} invalid prompt(s) will become error rows" if bad else ""))
    print(f"  strategy configs ({len(cfg.strategies)}): {_shown_list([s.label for s in cfg.strategies])}")
    print(f"  seeds: [{_shown_list([str(s) for s in cfg.seeds])}]; units: {len(units)}; rows: {rows}")
    return 0


def add_run_commands(sub: "argparse._SubParsersAction") -> None:
    """Add the ``run`` and ``validate`` subparsers."""
    r = sub.add_parser("run", help="run a config: every strategy on every prompt set, written to reports/<run_id>/")
    r.add_argument("config", help="YAML run config, e.g. configs/quickstart.yaml")
    r.add_argument("--address", help="Ray cluster address (default: start an embedded local Ray)")
    r.add_argument("--resume", metavar="RUN_ID", help="continue this run id (default: derived from the config hash, "
                                                       "so a rerun of the same config resumes)")
    r.add_argument("--output-dir", help="report root (default: output.dir from the config, 'reports')")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("-v", "--verbose", action="store_true", help="show engine and Ray logs")
    r.add_argument("--force", action="store_true", help="run a plan of more rows than the limit "
                                                       "(harness.config.MAX_PLANNED_ROWS, 1,000,000)")
    r.add_argument("--allow-unsandboxed-code", action="store_true",
                   help="where bubblewrap cannot run, score code metrics (pass@k) by running generated code as a "
                        "plain subprocess with rlimits instead of refusing; NOT a sandbox")
    r.set_defaults(func=_cmd_run)

    v = sub.add_parser("validate", help="check a config and show the plan, without running anything; runs no "
                                        "code the config names")
    v.add_argument("config")
    v.add_argument("--force", action="store_true", help="accept a plan of more rows than the limit "
                                                       "(harness.config.MAX_PLANNED_ROWS, 1,000,000)")
    v.set_defaults(func=_cmd_validate)

"""``deceval``: run decoding-strategy evaluations and work with their reports.

Import-light: subcommands import what they need when they run, so ``--help`` and config
validation need no vllm, torch or ray.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import DecevalError


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.runner import describe_engines, format_table, run, summarize

    cfg = load_config(args.config)
    _check_before_run(cfg, force=args.force)
    _check_code_sandbox(cfg, args.allow_unsandboxed_code)
    if args.output_dir:
        from dataclasses import replace
        cfg = replace(cfg, output_dir=args.output_dir)
    outcome = run(cfg, address=args.address, run_id=args.resume, verbose=args.verbose, progress=not args.no_progress)
    print(f"\nreport: {outcome.run_dir}  ({outcome.units_done} unit(s) run, {outcome.units_skipped} skipped, "
          f"{len(outcome.units_failed)} failed, {outcome.seconds:.1f} s)")
    if outcome.engines:
        print(describe_engines(outcome.engines))
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
    import os

    from harness.metrics import METRICS
    from harness.plan import metric_names
    from harness.prompts import HUMANEVAL_SET
    from harness.sandbox import ALLOW_UNSANDBOXED_ENV, execution_mode, sandbox_problem

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
    from harness.config import check_metric_plugins
    check_metric_plugins(cfg)
    if not force:
        _check_plan_size(cfg)


def _check_plan_size(cfg, force: bool = False, sets=None) -> int:
    """Planned rows of ``cfg``; ConfigError above harness.config.MAX_PLANNED_ROWS unless ``force``."""
    from harness.config import check_planned_rows
    from harness.prompts import load_prompt_set

    sets = [load_prompt_set(p) for p in cfg.prompt_sets] if sets is None else sets
    return check_planned_rows(cfg, sum(len(s.prompts) for s in sets), force=force)


def _shown_list(items: list[str], limit: int = 20) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _cmd_validate(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.plan import make_plan
    from harness.prompts import load_prompt_set

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


def _cmd_strategies(args: argparse.Namespace) -> int:
    from strategies import STRATEGIES
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        kind = "stepwise" if cls.stepwise else "native"
        det = "deterministic" if cls.deterministic else "seeded"
        print(f"{name}  [{kind}, {det}]  {cls.description}")
        for pname, default, doc in cls.Params.describe():
            print(f"    {pname} = {default!r}  {doc}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from harness import models
    if args.models_cmd == "prepare":
        return models.main_prepare(args.names, force=args.force)
    for spec in models.BUILTIN_MODELS.values():
        print(f"{spec.name}  {spec.description}")
    return 0


def _cmd_prompts(args: argparse.Namespace) -> int:
    from harness.config import PromptSetConfig
    from harness.prompts import BUILTIN_SETS, GENERATED_SETS, load_prompt_set
    for name, desc in BUILTIN_SETS.items():
        ps = load_prompt_set(PromptSetConfig(name=name, path=None, chat=False, limit=None))
        print(f"{name}  ({len(ps.prompts)} prompts{', with references' if ps.has_references else ''})  {desc}")
    for name, (desc, _) in GENERATED_SETS.items():
        print(f"{name}  (generated)  {desc}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import run_doctor
    return run_doctor(probe=args.probe)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deceval", description="Evaluate LLM decoding strategies on vLLM engines in Ray actors; "
                                                            "every sample, metric and cost lands in Parquet.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    s = sub.add_parser("strategies", help="list strategies with their parameters and defaults")
    s.set_defaults(func=_cmd_strategies)

    m = sub.add_parser("models", help="built-in models: list, or prepare (install and convert) them offline")
    msub = m.add_subparsers(dest="models_cmd")
    mp = msub.add_parser("prepare", help="install and convert built-in models into the local cache")
    mp.add_argument("names", nargs="+", help="e.g. smollm2-135m gemma3-270m")
    mp.add_argument("--force", action="store_true", help="convert again even when the cache is complete")
    msub.add_parser("list", help="list built-in models")
    m.set_defaults(func=_cmd_models, models_cmd="list")

    d = sub.add_parser("doctor", help="check the install and this machine: CPU, cores, GPUs, torch/vLLM/Ray, engine "
                                      "defaults, models, sandbox; exit 1 when broken")
    d.add_argument("--probe", action="store_true", help="also start an engine on the default model and measure tokens/s")
    d.set_defaults(func=_cmd_doctor)

    pr = sub.add_parser("prompts", help="list built-in prompt sets")
    pr.set_defaults(func=_cmd_prompts)

    # Report commands (leaderboard, compare) and cluster commands (submit) live in their
    # own modules; each adds its subparsers here.
    from harness.cli_reports import add_report_commands
    from harness.cli_cluster import add_cluster_commands
    add_report_commands(sub)
    add_cluster_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DecevalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed units are saved; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``deceval tune CONFIG``: tune every strategy family with one budget, then test the best."""

from __future__ import annotations

import argparse

from harness.errors import ConfigError
from harness.files import display_uri, is_uri
from harness.tune import load_tune_config, run_tune
from harness.tune.tuner import budget, tune_id


def local_only(command: str, output_dir: str, what: str = "output.dir / --output-dir") -> None:
    """``deceval tune`` and ``study`` write their folders locally only: a URI is refused
    (``deceval run`` takes one; see docs/object-storage.md)."""
    if is_uri(output_dir):
        raise ConfigError(f"{what} {display_uri(output_dir)!r}: deceval {command} writes to a local "
                          f"folder only; give a local --output-dir (deceval run, leaderboard and compare take "
                          f"s3:// and other URIs)")


def _cmd_tune(args: argparse.Namespace) -> int:
    base, tcfg, source = load_tune_config(args.config)
    if args.output_dir:
        base = {**base, "output": {**(base.get("output") or {}), "dir": args.output_dir}}
    local_only("tune", str((base.get("output") or {}).get("dir", "reports")))
    tid = tune_id(base, tcfg)
    print(f"tune {tid}: {len(tcfg.families)} famil{'y' if len(tcfg.families) == 1 else 'ies'}, objective "
          f"{tcfg.objective} ({tcfg.direction}), budget {tcfg.trials} trial(s) each on {tcfg.dev_fraction:g} of "
          f"the prompts (dev)")
    for fam in tcfg.families:
        space = ", ".join(fam.space) or "nothing to search"
        print(f"  {fam.key}: {budget(tcfg, fam)} trial(s); searches {space}")
    if args.dry_run:
        return 0
    outcome = run_tune(base, tcfg, source, address=args.address, progress=not args.no_progress)
    print(f"tune: {outcome.tune_dir / 'tune.md'}")
    for key, best in outcome.best.items():
        print(f"  {key}: " + ("no feasible trial" if best is None else
                              f"best dev {tcfg.objective} {best.value:.3f} with {best.params}"))
    failed = outcome.test is None or not outcome.test.ok or any(not r.ok for r in outcome.rounds)
    return 1 if failed else 0


def add_tune_command(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tune", help="tune each strategy family with the same trial budget on a dev split (Optuna), "
                                    "then run the best of each on the test split; rerun to resume")
    t.add_argument("config", help="a config with a tune: section (see configs/tune-quick.yaml)")
    t.add_argument("--output-dir", help="where the tune folder goes (default: the config's output.dir)")
    t.add_argument("--address", help="a Ray cluster to run on (default: a local Ray)")
    t.add_argument("--dry-run", action="store_true", help="check the config and print the families and budgets")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_tune)

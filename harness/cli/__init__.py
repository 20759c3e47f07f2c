"""``deceval``: run decoding-strategy evaluations and work with their reports.

One module per command group: :mod:`.run` (run, validate), :mod:`.catalogue` (strategies,
models, prompts), :mod:`.doctor`, :mod:`.placement` (the GPU layout on paper), :mod:`.reports` (leaderboard, compare, view, metrics) and
:mod:`.cluster` (submit), :mod:`.tune`, :mod:`.probe` and :mod:`.study`. Heavy libraries (vllm, torch, ray) load only when a command
needs them, so ``--help`` and config validation start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli.catalogue import add_catalogue_commands
from harness.cli.cluster import add_cluster_commands
from harness.cli.doctor import add_doctor_command
from harness.cli.placement import add_placement_command
from harness.cli.probe import add_probe_commands
from harness.cli.reports import add_report_commands
from harness.cli.run import add_run_commands
from harness.cli.study import add_study_command
from harness.cli.tune import add_tune_command
from harness.errors import DecevalError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deceval", description="Evaluate LLM decoding strategies on vLLM engines in Ray actors; "
                                                            "every sample, metric and cost lands in Parquet.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_commands(sub)
    add_catalogue_commands(sub)
    add_doctor_command(sub)
    add_placement_command(sub)
    add_report_commands(sub)
    add_cluster_commands(sub)
    add_tune_command(sub)
    add_probe_commands(sub)
    add_study_command(sub)
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



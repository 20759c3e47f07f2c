"""CLI commands over reports: leaderboard and compare."""

from __future__ import annotations

import argparse


def add_report_commands(sub: "argparse._SubParsersAction") -> None:
    """Add ``leaderboard`` and ``compare`` subparsers (to be filled in)."""

"""CLI commands for clusters: submit a run as a Ray job."""

from __future__ import annotations

import argparse


def add_cluster_commands(sub: "argparse._SubParsersAction") -> None:
    """Add the ``submit`` subparser (to be filled in)."""

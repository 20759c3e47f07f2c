"""Probes of a model itself, beside the strategy runs: :mod:`.dependency` (how far back the
context matters, against the seed paper's dependency length). Heavy libraries load only
when a probe runs."""

from harness.probe.dependency import DEFAULT_KS, ProbeConfig, ProbeResult, run_probe

__all__ = ["DEFAULT_KS", "ProbeConfig", "ProbeResult", "run_probe"]

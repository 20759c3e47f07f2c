"""Studies: research questions answered with tuned families and paired statistics.
:mod:`.config` reads a study file, :mod:`.runner` runs its tunes and probes and decides
each claim, :mod:`.report` writes the report from ``study.json``."""

from harness.study.config import Claim, ClaimTest, StudyConfig, load_study_config, parse_study_config
from harness.study.report import to_markdown, write_report
from harness.study.runner import StudyOutcome, run_study

__all__ = ["Claim", "ClaimTest", "StudyConfig", "StudyOutcome", "load_study_config", "parse_study_config",
           "run_study", "to_markdown", "write_report"]

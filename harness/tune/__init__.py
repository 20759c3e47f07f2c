"""Fair tuning (``deceval tune``): the same trial budget for every strategy family on a dev
split, then the best of each family on the held-out test split (:mod:`.tuner`)."""

from harness.tune.tuner import (TuneOutcome, Trial, best_trial, budget, load_tune_config, run_replication,
                               run_tune)

__all__ = ["TuneOutcome", "Trial", "best_trial", "budget", "load_tune_config", "run_replication", "run_tune"]

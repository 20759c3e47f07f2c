"""Metrics: the registry and scoring (:mod:`.core`) and the built-in metrics, registered
on import in this order: task (:mod:`.task`), text (:mod:`.text`), cost (:mod:`.cost`), and
MAUVE (:mod:`.mauve`, a set-level metric whose package is an optional extra).
Code metrics run generated code only in the sandbox (:mod:`.sandbox`).

Heavy libraries (sacrebleu, sentence-transformers, mauve-text, torch) are imported inside the functions that
need them: importing this package costs no model load.
"""

from harness.metrics import cost, mauve, task, text  # noqa: E402,F401 - registers the built-in metrics, in this order
from harness.metrics.core import (
                                  AGGREGATIONS,
                                  METRICS,
                                  Metric,
                                  default_metrics,
                                  describe_metrics,
                                  direction_word,
                                  get_metric,
                                  is_error,
                                  metric_direction,
                                  register_metric,
                                  score_on_engine,
                                  score_rows,
)
from harness.metrics.task import normalize_answer, parse_number, pass_at_k_estimate
from harness.metrics.text import (
                                  compression_ratio,
                                  distinct_n,
                                  diversity_of,
                                  ngrams,
                                  rep_n,
                                  words,
)

__all__ = ["AGGREGATIONS", "METRICS", "Metric", "compression_ratio", "default_metrics", "describe_metrics",
           "direction_word", "distinct_n", "diversity_of", "get_metric", "is_error", "metric_direction", "ngrams",
           "normalize_answer", "parse_number", "pass_at_k_estimate", "register_metric", "rep_n", "score_on_engine",
           "score_rows", "words"]

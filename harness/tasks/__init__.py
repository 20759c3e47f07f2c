"""Benchmark tasks from the user's own data: where the records come from and how they
become prompts (:mod:`.sources`: JSONL, Parquet, CSV or a Hugging Face dataset, field
mapping, template, few-shot), and how an answer is read back out of a completion
(:mod:`.extract`: the answer extractors and lm-eval's exact match); and lm-evaluation-harness
tasks, whose prompts and scores lm-eval itself makes (:mod:`.lm_eval_bridge`)."""

from harness.tasks.extract import (
                                   ANSWER_NORMALISATION,
                                   EXTRACTORS,
                                   GSM8K_REGEXES_TO_IGNORE,
                                   Extractor,
                                   RegexExtractor,
                                   describe_extractors,
                                   exact_match,
                                   get_extractor,
                                   row_answer,
)
from harness.tasks.lm_eval_bridge import (
                                          LmEvalScore,
                                          lm_eval_records,
                                          lm_eval_score,
                                          score_lm_eval_rows,
)
from harness.tasks.sources import (
                                   FIELD_KEYS,
                                   FILE_SUFFIXES,
                                   HFDataset,
                                   Shaping,
                                   Template,
                                   read_records,
                                   records_from_csv,
                                   records_from_hf,
                                   records_from_jsonl,
                                   records_from_parquet,
                                   shape_records,
)

__all__ = ["ANSWER_NORMALISATION", "EXTRACTORS", "FIELD_KEYS", "FILE_SUFFIXES", "GSM8K_REGEXES_TO_IGNORE", "Extractor",
           "HFDataset", "LmEvalScore", "RegexExtractor", "Shaping", "Template", "describe_extractors", "exact_match",
           "get_extractor", "lm_eval_records", "lm_eval_score", "read_records", "records_from_csv", "records_from_hf",
           "records_from_jsonl", "records_from_parquet", "row_answer", "score_lm_eval_rows", "shape_records"]

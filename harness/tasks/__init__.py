"""Benchmark tasks from the user's own data: where the records come from and how they
become prompts (:mod:`.sources`: JSONL, Parquet, CSV or a Hugging Face dataset, field
mapping, template, few-shot), and how an answer is read back out of a completion
(:mod:`.extract`: the answer extractors and lm-eval's exact match)."""

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

__all__ = ["ANSWER_NORMALISATION", "EXTRACTORS", "GSM8K_REGEXES_TO_IGNORE", "Extractor", "RegexExtractor",
           "describe_extractors", "exact_match", "get_extractor", "row_answer"]

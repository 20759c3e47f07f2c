"""The engine actor with a toy engine inside: the real ``EngineActor.run_unit`` (worker,
step driver, rows) over a deterministic 32-token StepEngine, so a whole run goes through
the real runner, scheduler, Ray and Parquet in seconds, without vLLM or a model."""

from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Any, Sequence

import numpy as np

from harness.config import EngineOptions
from harness.engine.actor import EngineActor
from harness.engine.engine import WarmUpLog
from strategies.base import StepResult
from strategies.distributions import step_result

VOCAB = 32
EOS = 0


class ToyEngine:
    """Next-token log-probabilities that depend on the last token only, peaked away from EOS
    (so samples run to max_tokens); text is one letter per token.

    Cost is modelled like vLLM's: a prefix cache of every sequence sent (a request whose
    sequence minus its last token was sent before computes one token, any other computes all
    of it), emptied by ``reset_caches``; and ``cold_seconds`` of one-off set-up paid by the
    first request the engine serves (what a warm-up must absorb)."""

    vocab_size = VOCAB
    eos_token_ids = frozenset({EOS})
    cold_seconds = 0.0

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = EngineOptions.model_validate(options)
        self.warm = WarmUpLog()
        self.cache: set[tuple[int, ...]] = set()  # sequences whose KV the cache holds
        self.cold = True  # the one-off set-up is still to be paid

    def reset_caches(self) -> None:
        self.cache.clear()
        self.warm.cache_resets += 1

    def encode(self, text: str, chat: bool = False) -> list[int]:
        return [1 + b % (VOCAB - 1) for b in text.encode()[:16]] or [1]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(ord("a") + t % 26) for t in token_ids)

    def next_token(self, sequences: Sequence[Sequence[int]], *, top_k: int, nucleus_p: float | None = None,
                   full: bool = False) -> list[StepResult]:
        if self.cold and self.cold_seconds:
            time.sleep(self.cold_seconds)
        self.cold = False
        out = []
        for seq in sequences:
            peak = (seq[-1] * 7 + 3) % (VOCAB - 1) + 1
            logits = -np.abs(np.arange(VOCAB) - peak).astype(np.float64)
            lp = logits - np.log(np.exp(logits).sum())
            cached = len(seq) - 1 if tuple(seq[:-1]) in self.cache or tuple(seq) in self.cache else 0
            self.cache.add(tuple(seq))
            out.append(step_result(lp, top_k=top_k, nucleus_p=nucleus_p, full=full, cached_tokens=cached,
                                   computed_tokens=len(seq) - cached))
        return out

    def engine_dead(self) -> bool:
        return False

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "cpu_cores": None, "model_path": "toy", "dtype": "float32",
                "dtype_requested": "float32", "cpu": None, "load_seconds": 0.0, **self.warm.as_info()}


class ToyEngineActor(EngineActor):
    def __init__(self, model_path: str, options: dict[str, Any], cpu_cores: str | None, needs_bos: bool) -> None:
        self.engine = ToyEngine(options)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="unit")


class ColdToyEngine(ToyEngine):
    cold_seconds = 0.6


class ColdToyEngineActor(EngineActor):
    """A toy actor whose engine pays 0.6 s of one-off set-up on its first request."""

    def __init__(self, model_path: str, options: dict[str, Any], cpu_cores: str | None, needs_bos: bool) -> None:
        self.engine = ColdToyEngine(options)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="unit")

"""The engine actor with a toy engine inside: the real ``EngineActor.run_unit`` (worker,
step driver, rows) over a deterministic 32-token StepEngine, so a whole run goes through
the real runner, scheduler, Ray and Parquet in seconds, without vLLM or a model."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Sequence

import numpy as np

from harness.config import EngineOptions
from harness.engine.actor import EngineActor
from strategies.base import StepResult
from strategies.distributions import step_result

VOCAB = 32
EOS = 0


class ToyEngine:
    """Next-token log-probabilities that depend on the last token only, peaked away from EOS
    (so samples run to max_tokens); text is one letter per token."""

    vocab_size = VOCAB
    eos_token_ids = frozenset({EOS})

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = EngineOptions.model_validate(options)

    def encode(self, text: str, chat: bool = False) -> list[int]:
        return [1 + b % (VOCAB - 1) for b in text.encode()[:16]] or [1]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(ord("a") + t % 26) for t in token_ids)

    def next_token(self, sequences: Sequence[Sequence[int]], *, top_k: int, nucleus_p: float | None = None,
                   full: bool = False) -> list[StepResult]:
        out = []
        for seq in sequences:
            peak = (seq[-1] * 7 + 3) % (VOCAB - 1) + 1
            logits = -np.abs(np.arange(VOCAB) - peak).astype(np.float64)
            lp = logits - np.log(np.exp(logits).sum())
            out.append(step_result(lp, top_k=top_k, nucleus_p=nucleus_p, full=full, computed_tokens=1))
        return out

    def engine_dead(self) -> bool:
        return False

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "cpu_cores": None, "model_path": "toy", "dtype": "float32",
                "dtype_requested": "float32", "cpu": None}


class ToyEngineActor(EngineActor):
    def __init__(self, model_path: str, options: dict[str, Any], cpu_cores: str | None, needs_bos: bool) -> None:
        self.engine = ToyEngine(options)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="unit")

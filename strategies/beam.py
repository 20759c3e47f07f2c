"""Beam search through vLLM's own beam search (``LLM.beam_search``).

vLLM's beam search is itself an outer step loop over the engine (one ``generate`` per token
step for all live beams, ``logprobs = 2 * width``, prefix caching), so the harness hands it
the whole unit (``run_unit``) rather than driving it step by step. The best beam (by vLLM's
length-penalised cumulative logprob) is the completion. vLLM's beam search knows no stop
strings: a completion is cut at the first stop string afterwards (finish reason "stop").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from strategies.base import Params, Stops, StepwiseStrategy, check_range, param


@dataclass(frozen=True)
class BeamParams(Params):
    width: int = param(4, "beam width: how many partial sequences are kept per step")
    length_penalty: float = param(1.0, "vLLM's length penalty: beams ranked by logprob / length ** length_penalty")

    def validate(self) -> None:
        check_range("width", self.width, 1, None, integer=True)
        check_range("length_penalty", self.length_penalty, None, None)


class BeamSearch(StepwiseStrategy):
    name = "beam"
    description = "Beam search with vLLM's own LLM.beam_search; the best beam is the completion."
    Params = BeamParams
    deterministic = True
    step_fields = ()  # vLLM's beam search keeps no per-step trace

    def run_unit(self, engine: Any, todo: list[tuple[dict[str, Any], list[int]]], stops: Stops) -> None:
        """Search every (row, prompt ids) of ``todo`` and fill the rows."""
        t0 = time.perf_counter()
        try:
            outs = engine.beam_search([ids for _, ids in todo], beam_width=self.params.width,
                                      max_tokens=stops.max_tokens,
                                      length_penalty=self.params.length_penalty)
        except Exception as exc:  # noqa: BLE001
            for row, _ in todo:
                row["error"] = f"beam search failed: {type(exc).__name__}: {exc}"
            return
        latency = time.perf_counter() - t0
        for (row, _), out in zip(todo, outs):
            ids = out["token_ids"]
            text = engine.decode(ids)
            finish = "eos" if ids and ids[-1] in stops.token_ids else "length"
            cut = stops.cut(text)
            if cut != text:
                text, finish = cut, "stop"
            row.update(completion=text, completion_tokens=len(ids), finish_reason=finish, latency_s=latency)

"""A third-party stepwise strategy, as a plugin author would write one: greedy decoding
that records the surprisal (-log p) of each chosen token in its step trace and their mean
per sample. It declares both columns in strategies.base terms and nothing else: the row
schema, the report and the leaderboard take them from the declarations, with no harness
edit. Used in a config as ``name: tests.fakes.plugin_strategy:SurprisalGreedy``."""

from __future__ import annotations

from typing import Sequence

from strategies.base import (
    STEP_BASICS,
    Column,
    Decoded,
    SeqState,
    StepEngine,
    StepwiseStrategy,
    Stops,
)

PLUGIN_NAME = "tests.fakes.plugin_strategy:SurprisalGreedy"


class SurprisalGreedy(StepwiseStrategy):
    name = "surprisal_greedy"
    description = "Greedy, one engine request per step, with the surprisal of every chosen token."
    deterministic = True
    sample_columns = (Column("mean_surprisal", "float64", direction="lower",
                             description="mean surprisal of the chosen tokens (nats)"),)
    step_fields = STEP_BASICS + (Column("surprisal", "float64", description="-log p of the chosen token"),)

    def decode(self, engine: StepEngine, prompts: Sequence[Sequence[int]], *, seeds: Sequence[int],
               stops: Stops) -> list[Decoded]:
        seqs = [SeqState(p, s) for p, s in zip(prompts, seeds)]
        live = list(seqs)
        while live:
            for s, r in zip(live, engine.next_token([s.ids for s in live], top_k=1)):
                s.charge(r)
                token, lp = r.token_ids[0], r.logprobs[0]
                s.push(token, {"token_id": token, "logprob": lp, "rank": 1, "candidates": 1, "surprisal": -lp}, stops)
            live = [s for s in live if s.finish is None]
        return [s.decoded({"mean_surprisal": sum(st["surprisal"] for st in s.steps) / len(s.steps)}) for s in seqs]

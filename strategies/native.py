"""Native strategies: each compiles to ``vllm.SamplingParams`` keyword arguments and runs
as one batched ``generate`` on the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strategies.base import NativeStrategy, Params, check_range, param


@dataclass(frozen=True)
class PenaltyParams(Params):
    repetition_penalty: float = param(1.0, "multiplies logits of tokens already seen (>1 discourages repeats)")
    presence_penalty: float = param(0.0, "subtracted from logits of tokens already generated")
    frequency_penalty: float = param(0.0, "subtracted per occurrence of a token already generated")

    def validate(self) -> None:
        check_range("repetition_penalty", self.repetition_penalty, 0, None, low_open=True)
        check_range("presence_penalty", self.presence_penalty, -2, 2)
        check_range("frequency_penalty", self.frequency_penalty, -2, 2)


@dataclass(frozen=True)
class TemperatureParams(PenaltyParams):
    temperature: float = param(1.0, "softmax temperature; lower is sharper")

    def validate(self) -> None:
        super().validate()
        check_range("temperature", self.temperature, 0, None, low_open=True)


@dataclass(frozen=True)
class TopKParams(TemperatureParams):
    top_k: int = param(50, "sample among the k most likely tokens")

    def validate(self) -> None:
        super().validate()
        check_range("top_k", self.top_k, 1, None, integer=True)


@dataclass(frozen=True)
class TopPParams(TemperatureParams):
    top_p: float = param(0.9, "sample from the smallest set of tokens whose mass reaches top_p")

    def validate(self) -> None:
        super().validate()
        check_range("top_p", self.top_p, 0, 1, low_open=True)


@dataclass(frozen=True)
class MinPParams(TemperatureParams):
    min_p: float = param(0.1, "drop tokens below min_p times the top token's probability")

    def validate(self) -> None:
        super().validate()
        check_range("min_p", self.min_p, 0, 1)


class _Native(NativeStrategy):
    """Every field of a native strategy's Params is a ``vllm.SamplingParams`` argument of the
    same name, so compiling is a copy."""

    def sampling_kwargs(self) -> dict[str, Any]:
        return self.params.to_dict()


class Greedy(_Native):
    name = "greedy"
    description = "Always the most likely token (temperature 0)."
    Params = PenaltyParams
    deterministic = True

    def sampling_kwargs(self) -> dict[str, Any]:
        return {"temperature": 0.0, **super().sampling_kwargs()}


class Temperature(_Native):
    name = "temperature"
    description = "Ancestral sampling from the temperature-scaled distribution."
    Params = TemperatureParams


class TopK(_Native):
    name = "top_k"
    description = "Sampling restricted to the k most likely tokens."
    Params = TopKParams


class TopP(_Native):
    name = "top_p"
    description = "Nucleus sampling: the smallest head of the distribution with mass >= top_p."
    Params = TopPParams


class MinP(_Native):
    name = "min_p"
    description = "Sampling among tokens with probability >= min_p x the top token's."
    Params = MinPParams

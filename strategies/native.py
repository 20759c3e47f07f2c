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


class _Penalised(NativeStrategy):
    def _penalties(self) -> dict[str, Any]:
        p = self.params
        return {"repetition_penalty": p.repetition_penalty, "presence_penalty": p.presence_penalty,
                "frequency_penalty": p.frequency_penalty}


class Greedy(_Penalised):
    name = "greedy"
    description = "Always the most likely token (temperature 0)."
    Params = PenaltyParams
    deterministic = True

    def sampling_kwargs(self) -> dict[str, Any]:
        return {"temperature": 0.0, **self._penalties()}


class Temperature(_Penalised):
    name = "temperature"
    description = "Ancestral sampling from the temperature-scaled distribution."
    Params = TemperatureParams

    def sampling_kwargs(self) -> dict[str, Any]:
        return {"temperature": self.params.temperature, **self._penalties()}


class TopK(_Penalised):
    name = "top_k"
    description = "Sampling restricted to the k most likely tokens."
    Params = TopKParams

    def sampling_kwargs(self) -> dict[str, Any]:
        return {"temperature": self.params.temperature, "top_k": self.params.top_k, **self._penalties()}


class TopP(_Penalised):
    name = "top_p"
    description = "Nucleus sampling: the smallest head of the distribution with mass >= top_p."
    Params = TopPParams

    def sampling_kwargs(self) -> dict[str, Any]:
        return {"temperature": self.params.temperature, "top_p": self.params.top_p, **self._penalties()}


class MinP(_Penalised):
    name = "min_p"
    description = "Sampling among tokens with probability >= min_p x the top token's."
    Params = MinPParams

    def sampling_kwargs(self) -> dict[str, Any]:
        return {"temperature": self.params.temperature, "min_p": self.params.min_p, **self._penalties()}

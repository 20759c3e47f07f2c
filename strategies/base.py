"""The strategy API: one small class per decoding strategy.

A strategy has a registered ``name``, a frozen, validated ``Params`` dataclass and
capability flags that the scheduler reads. Native strategies compile to
``vllm.SamplingParams`` keyword arguments and run as one batched ``generate``;
stepwise strategies drive a :class:`StepEngine` one token step at a time.

Import-light by contract: no vllm, torch or ray here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

from harness.errors import ParamError


def param(default: Any, doc: str) -> Any:
    """A Params field with a one-line description (shown by ``deceval strategies``)."""
    return field(default=default, metadata={"doc": doc})


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    """Raise ``ParamError("top_p must be in (0, 1], got 1.5")`` style errors."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ParamError(f"{name} must be {kind}, got {value!r}")
    if isinstance(value, float) and math.isnan(value):
        raise ParamError(f"{name} must be {kind}, got nan")
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        lo = "(-inf" if low is None else ("(" if low_open else "[") + _fmt(low)
        hi = "inf)" if high is None else _fmt(high) + (")" if high_open else "]")
        raise ParamError(f"{name} must be in {lo}, {hi}, got {_fmt(value)}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ParamError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def _fmt(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Params:
    """Base class of strategy parameters: frozen; ``__post_init__`` normalises then validates."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # YAML gives ints for floats ("top_p: 1"); normalise so ids and labels are stable.
            if f.type in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
        self.validate()

    def validate(self) -> None:
        """Raise ParamError naming the field, the allowed range and the value."""

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """(name, default, doc) for each parameter."""
        out = []
        own = set(cls.__dict__.get("__annotations__", {}))
        # The strategy's own parameters first, inherited ones (penalties, ...) after.
        for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
            default = f.default if f.default is not dataclasses.MISSING else None
            out.append((f.name, default, f.metadata.get("doc", "")))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Strategy:
    """Base class. Subclasses set ``name``, ``description`` and ``Params``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    #: True: drives the engine step by step (decode); False: compiles to SamplingParams.
    stepwise: ClassVar[bool] = False
    #: True: output does not depend on the seed (greedy, beam search, WSP argmax).
    deterministic: ClassVar[bool] = False

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Strategy":
        """Build from a config mapping of parameter values; unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(raw) - known)
        if unknown:
            import difflib
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ParamError(f"unknown parameter {', '.join(hints)} for strategy {cls.name!r}; "
                             f"allowed: {', '.join(sorted(known)) or 'none'}")
        try:
            return cls(cls.Params(**raw))
        except TypeError as exc:  # wrong types that dataclasses reject
            raise ParamError(f"strategy {cls.name!r}: {exc}") from exc


class NativeStrategy(Strategy):
    """Runs as one batched ``LLM.generate``."""

    def sampling_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.SamplingParams``, without max_tokens, seed and stop,
        which the harness sets per request."""
        raise NotImplementedError


# ---- Stepwise API -------------------------------------------------------------------------


@dataclass
class StepResult:
    """The engine's answer for one token-id sequence: its next-token distribution.

    ``token_ids``/``logprobs`` hold the top ``k`` tokens, sorted by logprob descending with
    ties broken by lower token id. ``nucleus_size`` is the exact size of the top-p nucleus
    (no cap below the vocabulary) when the request asked for it.
    """

    token_ids: list[int]
    logprobs: list[float]
    nucleus_size: int | None = None
    cached_tokens: int = 0
    computed_tokens: int = 0
    full_logprobs: Any = None  # optional: the whole distribution as a numpy array


class StepEngine(Protocol):
    """What a stepwise strategy may ask of an engine: next-token distributions for a batch
    of token-id sequences, in one batched call."""

    vocab_size: int
    eos_token_ids: frozenset[int]

    def next_token(self, sequences: Sequence[Sequence[int]], *, top_k: int,
                   nucleus_p: float | None = None, full: bool = False) -> list[StepResult]:
        ...


@dataclass
class Decoded:
    """One stepwise sample: generated token ids, why it stopped, and per-step traces."""

    token_ids: list[int]
    finish_reason: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    engine_requests: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0


class StepwiseStrategy(Strategy):
    """Drives a :class:`StepEngine` one token step at a time, batching every live
    sequence (and candidate) of the unit into each step."""

    stepwise = True

    def decode(self, engine: StepEngine, prompts: Sequence[Sequence[int]], *, max_tokens: int,
               seeds: Sequence[int], stop_token_ids: frozenset[int] = frozenset(),
               stop_check: Callable[[list[int]], bool] | None = None) -> list[Decoded]:
        """Decode every prompt; ``stop_check(generated_ids)`` is True when a stop string
        appeared (the driver detokenizes only a short tail for it)."""
        raise NotImplementedError

"""The strategy API: one small class per decoding strategy.

A strategy has a registered ``name``, a frozen, validated ``Params`` dataclass and
capability flags that the scheduler reads. Native strategies compile to
``vllm.SamplingParams`` keyword arguments and run as one batched ``generate``;
stepwise strategies drive a :class:`StepEngine` one token step at a time.

This module is the whole contract between strategies and the harness:

- a strategy declares the columns it adds to its rows (:class:`Column`): per-sample
  metrics (``sample_columns``) and the fields of its per-step trace (``step_fields``); the
  row schema, the leaderboard and its plots read these declarations, so a new strategy
  with its own trace metric needs no harness edit;
- :class:`Stops` is the one definition of when a sample stops (EOS, stop strings,
  ``max_tokens``) and how its text is cut, shared by the step driver, every stepwise
  strategy and beam search;
- :class:`SeqState` is the per-sequence state every stepwise strategy keeps.

Import-light by contract: numpy at most; no vllm, torch or ray here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

import numpy as np

from harness.errors import ParamError

#: The value types a strategy's column may have (their Parquet types: harness.rows).
COLUMN_TYPES = ("float64", "int64", "int32", "string", "bool")
#: Which way a column is better: "higher", "lower" or "none" (informational).
COLUMN_DIRECTIONS = ("higher", "lower", "none")
#: ``SamplingParams.extra_args`` key of a sampler that runs inside ``generate``: its rule and
#: parameters (``{"rule": "typical", "typical_p": 0.9}``), read by the engine's sampler
#: logits processor (harness.engine.vllm_ext.samplers).
SAMPLER_ARG = "deceval_sampler"


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
class Column:
    """A column a strategy adds to its rows: a per-sample metric (filled from
    :attr:`Decoded.metrics`) or one field of each entry of the ``steps`` trace."""

    name: str
    type: str  # one of COLUMN_TYPES
    direction: str = "none"  # one of COLUMN_DIRECTIONS
    description: str = ""
    #: per-sample metrics only: shown as a leaderboard column (with its CI) and plotted
    leaderboard: bool = True

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ParamError(f"column name must be an identifier, got {self.name!r}")
        check_choice(f"column {self.name!r} type", self.type, COLUMN_TYPES)
        check_choice(f"column {self.name!r} direction", self.direction, COLUMN_DIRECTIONS)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    #: Per-sample columns this strategy fills, from :attr:`Decoded.metrics` (null elsewhere).
    sample_columns: ClassVar[tuple[Column, ...]] = ()
    #: The fields of each entry of the row's ``steps`` trace (none: no trace).
    step_fields: ClassVar[tuple[Column, ...]] = ()

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def runs_stepwise(self) -> bool:
        """Whether this configuration drives the engine step by step (``decode``) rather
        than compiling to one batched ``generate`` (``sampling_kwargs``)."""
        return self.stepwise

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Strategy":
        """Build from a config mapping of parameter values; unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(raw) - known)
        if unknown:
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


@dataclass(frozen=True)
class Stops:
    """When a sample stops, and where its text is cut: the one definition, used by the step
    driver, every stepwise strategy and beam search.

    A sample stops at an EOS id (``token_ids``), when one of ``strings`` appears in its
    text, or at ``max_tokens``. The stop-string test detokenizes only a short tail of the
    generated ids (``decode``), enough to hold the longest stop string even at one byte
    per token. The text is cut before the earliest stop string, as vLLM returns it.
    """

    max_tokens: int
    token_ids: frozenset[int] = frozenset()
    strings: tuple[str, ...] = ()
    #: token ids -> text; needed only when ``strings`` are given
    decode: Callable[[Sequence[int]], str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "strings", tuple(s for s in self.strings if s))
        if self.strings and self.decode is None:
            raise ValueError("Stops: stop strings need a decode function to test them")

    @property
    def _span(self) -> int:
        return 4 * max(len(s.encode()) for s in self.strings) + 4

    def reason(self, generated: Sequence[int]) -> str | None:
        """The finish reason after ``generated[-1]`` was appended ("eos", "stop",
        "length"), or None to go on."""
        if generated and generated[-1] in self.token_ids:
            return "eos"
        if self.strings:
            tail = self.decode(list(generated[-self._span:]))  # type: ignore[misc]
            if any(s in tail for s in self.strings):
                return "stop"
        if len(generated) >= self.max_tokens:
            return "length"
        return None

    def cut(self, text: str) -> str:
        """``text`` up to (not including) the earliest stop string."""
        hits = [i for i in (text.find(s) for s in self.strings) if i != -1]
        return text[:min(hits)] if hits else text


class SeqState:
    """One sequence of a stepwise unit, as every stepwise strategy keeps it: prompt and
    generated ids, the row's seeded generator, the strategy's own state (``state``, ``q``),
    the step trace, why it finished, and what it cost the engine."""

    __slots__ = ("prompt", "gen", "rng", "state", "q", "steps", "finish", "requests", "cached", "computed",
                 "t0", "t_end")

    def __init__(self, prompt: Sequence[int], seed: int, state: Any = None) -> None:
        self.prompt = list(prompt)
        self.gen: list[int] = []
        self.rng = np.random.default_rng(seed)  # the row's own stream: rows never share draws
        self.state = state  # the strategy's per-sequence state (Mirostat's mu, ...)
        self.q: StepResult | None = None  # the next-token distribution, when already known
        self.steps: list[dict[str, Any]] = []
        self.finish: str | None = None
        self.requests = self.cached = self.computed = 0
        self.t0 = time.perf_counter()
        self.t_end: float | None = None

    @property
    def ids(self) -> list[int]:
        """The prompt and what has been generated so far: the next request's token ids."""
        return self.prompt + self.gen

    def charge(self, r: StepResult) -> None:
        """Count one engine request made for this sequence."""
        self.requests += 1
        self.cached += r.cached_tokens
        self.computed += r.computed_tokens

    def push(self, token: int, trace: dict[str, Any], stops: Stops) -> bool:
        """Append ``token`` and its trace entry; True while the sequence goes on."""
        self.gen.append(token)
        self.steps.append(trace)
        self.finish = stops.reason(self.gen)
        if self.finish:
            self.t_end = time.perf_counter() - self.t0
        return self.finish is None

    def decoded(self, metrics: Mapping[str, float | None] | None = None) -> Decoded:
        return Decoded(token_ids=self.gen, finish_reason=self.finish or "length", steps=self.steps,
                       metrics={**(metrics or {}), "latency_s": self.t_end}, engine_requests=self.requests,
                       cached_tokens=self.cached, computed_tokens=self.computed)


#: The trace fields every token-by-token strategy records per step.
STEP_BASICS = (
    Column("token_id", "int32", description="the chosen token"),
    Column("logprob", "float64", description="its log-probability under the model"),
    Column("rank", "int32", description="its rank in the next-token distribution (1: greedy)"),
    Column("candidates", "int32", description="tokens the rule allowed at this step"),
)


class StepwiseStrategy(Strategy):
    """Drives a :class:`StepEngine` one token step at a time, batching every live
    sequence (and candidate) of the unit into each step."""

    stepwise = True
    step_fields = STEP_BASICS
    #: True: asks ``next_token(..., nucleus_p=...)`` for exact nucleus sizes (the engine counts
    #: them with its in-engine processor where it has one, else from full-vocabulary logprobs).
    asks_nucleus_counts: ClassVar[bool] = False

    @property
    def lookahead_width(self) -> int:
        """Requests per live sequence in one step (1; a lookahead decoder: its candidates).
        The step driver sizes the waves of a long unit by it."""
        return 1

    def decode(self, engine: StepEngine, prompts: Sequence[Sequence[int]], *, seeds: Sequence[int],
               stops: Stops) -> list[Decoded]:
        """Decode every prompt (one seed each) until ``stops`` says it is done."""
        raise NotImplementedError

"""Dispatch of work units to engine actors, in the shape of Ray's ActorPool
(submit / get_next / map_unordered), with model affinity, bounded in-flight work,
dynamic load balancing and bounded retries.

Each model has its own pool of actors; a unit only ever goes to an actor of its model,
so every actor keeps one model loaded. A unit goes to the next idle actor. When an actor
dies (process killed, out of memory) Ray restarts it (``max_restarts``) and the unit is
retried on whichever actor of that model is free next, up to ``max_retries`` times;
after that the unit is reported as failed and the run goes on.

Two failure modes need more than Ray's own restart:

- a vLLM process of the engine (its model worker, or its engine core where vLLM runs one)
  dies but the actor process lives on: the actor notices within a second and raises
  ``EngineDeadError`` (``harness.engine_actor``). The scheduler kills such an actor with
  ``ray.kill(no_restart=False)`` so that Ray restarts it with a fresh engine;
- a unit can hang rather than fail (a vLLM engine core killed under a synchronous ``LLM``
  was seen to leave ``generate`` waiting for ever): with ``unit_timeout_s`` a unit that
  runs longer gets its actor killed and restarted, and counts as a failed attempt;
- calls to an actor that Ray is restarting fail at once (``ActorUnavailableError``) and
  would burn the retries of every unit sent its way. After a failure the actor is held
  back and probed (``__ray_ready__``) until it is up again; an actor found dead for good
  (restarts used up, node gone), or failing ``retire_after`` units in a row, is retired.
  When a model has no actor left, its remaining units fail at once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

log = logging.getLogger(__name__)

#: Errors raised inside an actor that mean its engine is gone: restart the actor.
ENGINE_DEAD_ERRORS = ("EngineDeadError",)


class UnitLike(Protocol):
    id: str
    model: str


class NoLiveActorError(RuntimeError):
    """Every actor of a model is retired: its remaining units cannot run."""


@dataclass
class _Flight:
    unit: Any
    model: str
    slot: int
    attempt: int
    deadline: float = float("inf")
    timed_out: bool = False


@dataclass
class _Probe:
    model: str
    slot: int


class Scheduler:
    def __init__(self, pools: dict[str, list[Any]], *, max_in_flight: int = 1, max_retries: int = 2,
                 method: str = "run_unit", retire_after: int = 4,
                 restart_on: tuple[str, ...] = ENGINE_DEAD_ERRORS, probe_interval: float = 0.5,
                 unit_timeout_s: float | None = None) -> None:
        if any(not actors for actors in pools.values()):
            raise ValueError("every model needs at least one actor")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.pools = pools
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.method = method
        self.retire_after = retire_after
        self.restart_on = restart_on
        self.probe_interval = probe_interval
        self.unit_timeout_s = unit_timeout_s

    def run(self, units: Iterable[UnitLike], on_done: Callable[[Any, Any], None],
            on_failed: Callable[[Any, BaseException, int], None],
            on_retry: Callable[[Any, BaseException, int], None] | None = None) -> dict[str, int]:
        """Run every unit; call ``on_done(unit, result)`` as each finishes (in completion
        order), ``on_retry(unit, error, attempt)`` when a failed attempt is queued again and
        ``on_failed(unit, error, attempts)`` when a unit runs out of retries.
        Returns counts: done, failed, retries, restarts (engine-dead kills), retired, timeouts."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

        queues: dict[str, deque] = {m: deque() for m in self.pools}
        for u in units:
            if u.model not in queues:
                raise KeyError(f"unit {u.id} is for model {u.model!r}, which has no engine pool")
            queues[u.model].append((u, 1))
        load = {m: [0] * len(a) for m, a in self.pools.items()}
        live = {m: set(range(len(a))) for m, a in self.pools.items()}  # not retired
        ready_slots = {m: set(range(len(a))) for m, a in self.pools.items()}  # live and not recovering
        strikes = {m: [0] * len(a) for m, a in self.pools.items()}
        flights: dict[Any, _Flight | _Probe] = {}
        due_probes: list[tuple[float, str, int]] = []
        stats = {"done": 0, "failed": 0, "retries": 0, "restarts": 0, "retired": 0, "timeouts": 0}

        def fail(unit: Any, exc: BaseException, attempts: int) -> None:
            stats["failed"] += 1
            on_failed(unit, exc, attempts)

        def retire(model: str, slot: int, why: str) -> None:
            if slot in live[model]:
                log.warning("retiring %s actor %d: %s", model, slot, why)
                live[model].discard(slot)
                ready_slots[model].discard(slot)
                stats["retired"] += 1

        def recover(model: str, slot: int, delay: float = 0.0) -> None:
            """Hold the slot back until a cheap call shows that the (restarted) actor is up:
            calls to a restarting actor fail at once and would burn the unit's retries."""
            ready_slots[model].discard(slot)
            if slot in live[model]:
                due_probes.append((time.monotonic() + delay, model, slot))

        def fill() -> None:
            now = time.monotonic()
            for item in [p for p in due_probes if p[0] <= now]:
                due_probes.remove(item)
                _, model, slot = item
                if slot in live[model]:
                    flights[self.pools[model][slot].__ray_ready__.remote()] = _Probe(model, slot)
            for model, queue in queues.items():
                if not live[model]:
                    while queue:
                        unit, attempt = queue.popleft()
                        fail(unit, NoLiveActorError(f"no live engine actor left for model {model!r}"), attempt - 1)
                    continue
                while queue and ready_slots[model]:
                    # Next idle actor of this model: the least loaded ready one with room.
                    slot = min(ready_slots[model], key=lambda i: (load[model][i], i))
                    if load[model][slot] >= self.max_in_flight:
                        break
                    unit, attempt = queue.popleft()
                    ref = getattr(self.pools[model][slot], self.method).remote(unit)
                    deadline = time.monotonic() + self.unit_timeout_s if self.unit_timeout_s else float("inf")
                    flights[ref] = _Flight(unit, model, slot, attempt, deadline)
                    load[model][slot] += 1

        while True:
            fill()
            if not any(isinstance(f, _Flight) for f in flights.values()) and not any(queues.values()):
                break
            now = time.monotonic()
            for f in flights.values():
                if isinstance(f, _Flight) and not f.timed_out and f.deadline <= now:
                    # A hung unit (e.g. an engine core that died without the engine noticing):
                    # kill the actor; Ray restarts it and the unit's ref fails -> retry below.
                    log.warning("unit %s (%s) ran past %.0f s on actor %d; restarting the actor", f.unit.id,
                                f.model, self.unit_timeout_s, f.slot)
                    f.timed_out = True
                    stats["timeouts"] += 1
                    ray.kill(self.pools[f.model][f.slot], no_restart=False)
            wakeups = [p[0] for p in due_probes] + [f.deadline for f in flights.values()
                                                    if isinstance(f, _Flight) and not f.timed_out]
            wake = min(wakeups, default=float("inf"))
            timeout = None if wake == float("inf") else max(0.0, wake - now)
            if not flights:  # every actor with work waiting is restarting: wait for its next probe
                time.sleep(timeout or 0.0)
                continue
            ready, _ = ray.wait(list(flights), num_returns=1, timeout=timeout)
            if not ready:
                continue
            ref = ready[0]
            flight = flights.pop(ref)
            model, slot = flight.model, flight.slot
            if isinstance(flight, _Probe):
                try:
                    ray.get(ref)
                except ActorUnavailableError:
                    recover(model, slot, self.probe_interval)  # still restarting
                except RayActorError as exc:
                    retire(model, slot, f"it is dead ({str(exc).splitlines()[0]})")
                else:
                    if slot in live[model]:
                        ready_slots[model].add(slot)
                continue
            load[model][slot] -= 1
            try:
                result = ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                actor_died = isinstance(exc, RayActorError)
                killed = flight.timed_out
                if flight.timed_out:
                    exc = TimeoutError(f"unit {flight.unit.id} ran longer than unit_timeout_s="
                                       f"{self.unit_timeout_s:g} s; its actor was restarted ({exc})")
                if not actor_died and any(name in str(exc) for name in self.restart_on):
                    # The engine inside the actor is dead; the actor itself is not.
                    # Kill it so that Ray restarts it with a fresh engine.
                    log.warning("engine of %s actor %d is dead; restarting the actor", model, slot)
                    stats["restarts"] += 1
                    ray.kill(self.pools[model][slot], no_restart=False)
                    actor_died = killed = True
                if actor_died:
                    strikes[model][slot] += 1
                    if strikes[model][slot] >= self.retire_after:
                        retire(model, slot, f"{strikes[model][slot]} failures in a row")
                    elif slot in ready_slots[model]:
                        # after our own kill, give it time to go down before the first probe
                        recover(model, slot, self.probe_interval if killed else 0.0)
                if flight.attempt <= self.max_retries:
                    stats["retries"] += 1
                    log.warning("unit %s (%s) failed on attempt %d, retrying: %s", flight.unit.id, model,
                                flight.attempt, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    queues[model].appendleft((flight.unit, flight.attempt + 1))
                    if on_retry is not None:
                        on_retry(flight.unit, exc, flight.attempt)
                else:
                    fail(flight.unit, exc, flight.attempt)
            else:
                strikes[model][slot] = 0
                stats["done"] += 1
                on_done(flight.unit, result)
        return stats

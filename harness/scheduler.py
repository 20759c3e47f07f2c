"""Dispatch of work units to engine actors, in the shape of Ray's ActorPool
(submit / get_next / map_unordered), with model affinity, bounded in-flight work,
dynamic load balancing and bounded retries.

Each model has its own pool of actors; a unit only ever goes to an actor of its model,
so every actor keeps one model loaded. A unit goes to the next idle actor. When an actor
dies (process killed, out of memory) Ray restarts it (``max_restarts``) and the unit is
retried on whichever actor of that model is free next, up to ``max_retries`` times;
after that the unit is reported as failed and the run goes on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol


class UnitLike(Protocol):
    id: str
    model: str


@dataclass
class _Flight:
    unit: Any
    model: str
    slot: int
    attempt: int


class Scheduler:
    def __init__(self, pools: dict[str, list[Any]], *, max_in_flight: int = 1, max_retries: int = 2,
                 method: str = "run_unit") -> None:
        if any(not actors for actors in pools.values()):
            raise ValueError("every model needs at least one actor")
        self.pools = pools
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.method = method

    def run(self, units: Iterable[UnitLike], on_done: Callable[[Any, Any], None],
            on_failed: Callable[[Any, BaseException, int], None]) -> dict[str, int]:
        """Run every unit; call ``on_done(unit, result)`` as each finishes (in completion
        order) and ``on_failed(unit, error, attempts)`` when a unit runs out of retries."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        queues: dict[str, deque] = {m: deque() for m in self.pools}
        for u in units:
            if u.model not in queues:
                raise KeyError(f"unit {u.id} is for model {u.model!r}, which has no engine pool")
            queues[u.model].append((u, 1))
        load = {m: [0] * len(a) for m, a in self.pools.items()}
        flights: dict[Any, _Flight] = {}
        stats = {"done": 0, "failed": 0, "retries": 0}

        def fill() -> None:
            for model, queue in queues.items():
                while queue:
                    # Next idle actor of this model: the least loaded one with room.
                    slot = min(range(len(load[model])), key=lambda i: load[model][i])
                    if load[model][slot] >= self.max_in_flight:
                        break
                    unit, attempt = queue.popleft()
                    ref = getattr(self.pools[model][slot], self.method).remote(unit)
                    flights[ref] = _Flight(unit, model, slot, attempt)
                    load[model][slot] += 1

        fill()
        while flights:
            ready, _ = ray.wait(list(flights), num_returns=1)
            ref = ready[0]
            flight = flights.pop(ref)
            load[flight.model][flight.slot] -= 1
            try:
                result = ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                if flight.attempt <= self.max_retries:
                    stats["retries"] += 1
                    queues[flight.model].appendleft((flight.unit, flight.attempt + 1))
                else:
                    stats["failed"] += 1
                    on_failed(flight.unit, exc, flight.attempt)
            else:
                stats["done"] += 1
                on_done(flight.unit, result)
            fill()
        return stats

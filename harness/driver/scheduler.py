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
  ``EngineDeadError`` (``harness.engine.actor``). The scheduler kills such an actor with
  ``ray.kill(no_restart=False)`` so that Ray restarts it with a fresh engine;
- a unit can hang rather than fail (a vLLM engine core killed under a synchronous ``LLM``
  was seen to leave ``generate`` waiting for ever): with ``unit_timeout_s`` a unit that
  runs longer gets its actor killed and restarted, and counts as a failed attempt;
- calls to an actor that Ray is restarting fail at once (``ActorUnavailableError``) and
  would burn the retries of every unit sent its way. After a failure the actor is held
  back and probed (``__ray_ready__``) until it is up again; an actor found dead for good
  (restarts used up, node gone), or failing ``retire_after`` units in a row, is retired.
  When a model has no actor left, its remaining units fail at once.

Node loss (several Ray nodes): with ``nodes`` (a :class:`NodeWatch`, in the runner
:class:`harness.driver.placement.Placement`) the scheduler asks every ``node_check_s``
seconds, and at once after an actor failure, which replicas sit on a node that is no longer
alive. For each: its units still in flight are queued again (a node loss is not the unit's
fault and costs it no attempt; ``on_retry`` records a :class:`NodeLostError`), and the
replica is started again on a live node with room for it, or given up (the run goes on with
fewer replicas). A call that Ray failed before it declared the node dead (the actor's
process gone) was already retried as after any actor crash, at the cost of one attempt. A restarted
replica that is not up within ``start_timeout_s`` is given up too. So a dead node is noticed
as soon as Ray declares it dead (its health checks; see docs/cluster.md), never through the
unit timeout.
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


class NodeLostError(RuntimeError):
    """The node of the actor running a unit died: the unit runs again elsewhere."""


class NodeWatch(Protocol):
    """What the scheduler needs to know of nodes (:class:`harness.driver.placement.Placement`)."""

    def dead_slots(self) -> list[tuple[str, int]]:
        """(model, slot) of each replica whose node is no longer alive."""

    def replace(self, model: str, slot: int) -> Any | None:
        """A new actor for that replica on a live node, or None when none can hold it."""


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
    deadline: float = float("inf")  # a replica started again elsewhere must be up by then


class Scheduler:
    """The dispatch policy (pools, in-flight bound, retries, timeouts); each :meth:`run`
    keeps its state in a :class:`_Dispatch`."""

    def __init__(self, pools: dict[str, list[Any]], *, max_in_flight: int = 1, max_retries: int = 2,
                 method: str = "run_unit", retire_after: int = 4,
                 restart_on: tuple[str, ...] = ENGINE_DEAD_ERRORS, probe_interval: float = 0.5,
                 unit_timeout_s: float | None = None, nodes: NodeWatch | None = None, node_check_s: float = 1.0,
                 start_timeout_s: float = 900.0) -> None:
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
        self.nodes = nodes  # where replicas live; None: one node, never lost
        self.node_check_s = node_check_s  # how often to ask which replicas' nodes died
        self.start_timeout_s = start_timeout_s  # how long a re-placed replica may take to come up

    def run(self, units: Iterable[UnitLike], on_done: Callable[[Any, Any], None],
            on_failed: Callable[[Any, BaseException, int], None],
            on_retry: Callable[[Any, BaseException, int], None] | None = None) -> dict[str, int]:
        """Run every unit; call ``on_done(unit, result)`` as each finishes (in completion
        order), ``on_retry(unit, error, attempt)`` when a failed attempt is queued again and
        ``on_failed(unit, error, attempts)`` when a unit runs out of retries.
        Returns counts: done, failed, retries, restarts (engine-dead kills), retired, timeouts,
        node_losses (replicas whose node died), replaced (started again elsewhere), rerun (units
        queued again because their node died)."""
        import ray

        dispatch = _Dispatch(self, on_done, on_failed, on_retry)
        for u in units:
            dispatch.submit(u)
        while True:
            dispatch.fill()
            if dispatch.finished():
                break
            dispatch.check_nodes(time.monotonic())
            if dispatch.finished():
                break
            dispatch.on_timeout(time.monotonic())
            timeout = dispatch.wait_s(time.monotonic())
            if not dispatch.flights:  # every actor with work waiting is restarting: wait for its next probe
                time.sleep(timeout or 0.0)
                continue
            ready, _ = ray.wait(list(dispatch.flights), num_returns=1, timeout=timeout)
            if ready:
                dispatch.on_ready(ready[0])
        return dispatch.stats


class _Dispatch:
    """One run's state, in the shape of Ray's ``ActorPool``: named attributes and short
    methods, each actor addressed as (model, slot)."""

    def __init__(self, sched: Scheduler, on_done: Callable[[Any, Any], None],
                 on_failed: Callable[[Any, BaseException, int], None],
                 on_retry: Callable[[Any, BaseException, int], None] | None) -> None:
        pools = sched.pools
        self.sched = sched
        self.on_done, self.on_failed, self.on_retry = on_done, on_failed, on_retry
        #: per model, the units waiting for an actor, with their attempt number
        self.queues: dict[str, deque] = {m: deque() for m in pools}
        #: per model and slot, the units in flight on that actor
        self.load = {m: [0] * len(a) for m, a in pools.items()}
        #: per model, the slots not retired
        self.live = {m: set(range(len(a))) for m, a in pools.items()}
        #: per model, the live slots not held back while their actor restarts
        self.ready = {m: set(range(len(a))) for m, a in pools.items()}
        #: per model and slot, failures in a row (reset by a success)
        self.strikes = {m: [0] * len(a) for m, a in pools.items()}
        #: object ref -> the unit it runs, or the readiness probe it is
        self.flights: dict[Any, _Flight | _Probe] = {}
        #: (due time, model, slot): probes to send once due
        self.due_probes: list[tuple[float, str, int]] = []
        #: when to ask next which replicas' nodes died
        self.next_node_check = 0.0
        self.stats = {"done": 0, "failed": 0, "retries": 0, "restarts": 0, "retired": 0, "timeouts": 0,
                      "node_losses": 0, "replaced": 0, "rerun": 0}

    # ---- queueing and dispatch ----

    def submit(self, unit: Any, attempt: int = 1, front: bool = False) -> None:
        if unit.model not in self.queues:
            raise KeyError(f"unit {unit.id} is for model {unit.model!r}, which has no engine pool")
        (self.queues[unit.model].appendleft if front else self.queues[unit.model].append)((unit, attempt))

    def fill(self) -> None:
        """Send due probes, then units to the least-loaded ready actor of their model."""
        self._send_due_probes(time.monotonic())
        for model, queue in self.queues.items():
            if not self.live[model]:
                while queue:
                    unit, attempt = queue.popleft()
                    self._fail(unit, NoLiveActorError(f"no live engine actor left for model {model!r}"), attempt - 1)
                continue
            while queue and self.ready[model]:
                slot = min(self.ready[model], key=lambda i: (self.load[model][i], i))
                if self.load[model][slot] >= self.sched.max_in_flight:
                    break
                unit, attempt = queue.popleft()
                ref = getattr(self.sched.pools[model][slot], self.sched.method).remote(unit)
                timeout = self.sched.unit_timeout_s
                self.flights[ref] = _Flight(unit, model, slot, attempt,
                                            time.monotonic() + timeout if timeout else float("inf"))
                self.load[model][slot] += 1

    def finished(self) -> bool:
        return not any(isinstance(f, _Flight) for f in self.flights.values()) and not any(self.queues.values())

    def wait_s(self, now: float) -> float | None:
        """How long to wait for a result before a probe or a deadline is due (None: no limit)."""
        wakeups = [p[0] for p in self.due_probes] + [f.deadline for f in self.flights.values()
                                                     if not (isinstance(f, _Flight) and f.timed_out)]
        if self.sched.nodes is not None:
            wakeups.append(self.next_node_check)
        wake = min(wakeups, default=float("inf"))
        return None if wake == float("inf") else max(0.0, wake - now)

    # ---- events ----

    def on_timeout(self, now: float) -> None:
        """A unit past its deadline (a hung engine): kill its actor; Ray restarts it and the
        unit's ref fails, which :meth:`on_result` retries. A replica started again elsewhere
        that is not up by its deadline is given up."""
        for ref, f in list(self.flights.items()):
            if isinstance(f, _Probe) and f.deadline <= now:
                del self.flights[ref]
                self._retire(f.model, f.slot, f"it was started again on another node and was not up within "
                                              f"{self.sched.start_timeout_s:g} s")
                self._kill(f.model, f.slot, restart=False)
        for f in self.flights.values():
            if isinstance(f, _Flight) and not f.timed_out and f.deadline <= now:
                log.warning("unit %s (%s) ran past %.0f s on actor %d; restarting the actor", f.unit.id, f.model,
                            self.sched.unit_timeout_s, f.slot)
                f.timed_out = True
                self.stats["timeouts"] += 1
                self._kill(f.model, f.slot)

    def on_ready(self, ref: Any) -> None:
        flight = self.flights.pop(ref)
        if isinstance(flight, _Probe):
            self.on_probe(ref, flight)
        else:
            self.on_result(ref, flight)

    def on_probe(self, ref: Any, probe: _Probe) -> None:
        import ray
        from ray.exceptions import ActorUnavailableError, ActorUnschedulableError, RayActorError
        try:
            ray.get(ref)
        except ActorUnavailableError:
            self._recover(probe.model, probe.slot, self.sched.probe_interval)  # still restarting
        except (RayActorError, ActorUnschedulableError) as exc:
            if (probe.model, probe.slot) in self.check_nodes(time.monotonic(), force=True):
                return  # its node died: started again elsewhere (or given up) by check_nodes
            self._retire(probe.model, probe.slot, f"it is dead ({str(exc).splitlines()[0]})")
        else:
            if probe.slot in self.live[probe.model]:
                self.ready[probe.model].add(probe.slot)

    def on_result(self, ref: Any, flight: _Flight) -> None:
        import ray
        from ray.exceptions import ActorUnschedulableError, RayActorError, RayTaskError
        model, slot = flight.model, flight.slot
        self.load[model][slot] -= 1
        try:
            result = ray.get(ref)
        except (RayActorError, RayTaskError, ActorUnschedulableError) as exc:
            # unschedulable: an actor pinned to a node that is gone cannot be restarted
            self.on_error(flight, exc, actor_died=isinstance(exc, (RayActorError, ActorUnschedulableError)))
            return
        self.strikes[model][slot] = 0
        self.stats["done"] += 1
        self.on_done(flight.unit, result)

    def on_error(self, flight: _Flight, exc: BaseException, actor_died: bool) -> None:
        """A failed attempt: restart the actor where its engine is gone, then retry the unit
        or, out of retries, fail it."""
        model, slot = flight.model, flight.slot
        killed = flight.timed_out
        if actor_died and (model, slot) in self.check_nodes(time.monotonic(), force=True):
            # Its node died: check_nodes re-placed the replica; this unit runs again, no attempt lost.
            self._rerun(flight)
            return
        if flight.timed_out:
            exc = TimeoutError(f"unit {flight.unit.id} ran longer than unit_timeout_s="
                               f"{self.sched.unit_timeout_s:g} s; its actor was restarted ({exc})")
        if not actor_died and any(name in str(exc) for name in self.sched.restart_on):
            # The engine inside the actor is dead, the actor itself is not: restart it.
            log.warning("engine of %s actor %d is dead; restarting the actor", model, slot)
            self.stats["restarts"] += 1
            self._kill(model, slot)
            actor_died = killed = True
        if actor_died:
            self.strikes[model][slot] += 1
            if self.strikes[model][slot] >= self.sched.retire_after:
                self._retire(model, slot, f"{self.strikes[model][slot]} failures in a row")
            elif slot in self.ready[model]:
                # after our own kill, give it time to go down before the first probe
                self._recover(model, slot, self.sched.probe_interval if killed else 0.0)
        if flight.attempt > self.sched.max_retries:
            self._fail(flight.unit, exc, flight.attempt)
            return
        self.stats["retries"] += 1
        log.warning("unit %s (%s) failed on attempt %d, retrying: %s", flight.unit.id, model, flight.attempt,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        self.submit(flight.unit, flight.attempt + 1, front=True)
        if self.on_retry is not None:
            self.on_retry(flight.unit, exc, flight.attempt)

    # ---- node loss ----

    def check_nodes(self, now: float, force: bool = False) -> set[tuple[str, int]]:
        """Every ``node_check_s`` (or now, with ``force``): handle each replica whose node died.
        Returns those replicas as (model, slot)."""
        watch = self.sched.nodes
        if watch is None or (not force and now < self.next_node_check):
            return set()
        self.next_node_check = now + self.sched.node_check_s
        lost = [(m, s) for m, s in watch.dead_slots() if s in self.live.get(m, ())]
        for model, slot in lost:
            self.on_node_lost(model, slot)
        return set(lost)

    def on_node_lost(self, model: str, slot: int) -> None:
        """The node of actor (model, slot) is gone: queue its units again and start the
        replica on another node, or go on without it."""
        self.stats["node_losses"] += 1
        flights = [(ref, f) for ref, f in self.flights.items() if f.model == model and f.slot == slot]
        for ref, f in flights:
            del self.flights[ref]
            if isinstance(f, _Flight):
                self._rerun(f)
        self.due_probes = [p for p in self.due_probes if (p[1], p[2]) != (model, slot)]
        self.load[model][slot] = 0
        self.strikes[model][slot] = 0
        self.ready[model].discard(slot)
        actor = self.sched.nodes.replace(model, slot)
        if actor is None:
            self._retire(model, slot, "its node died and no live node has room for it; going on with "
                                      f"{len(self.live[model]) - 1} replica(s) of {model!r}")
            return
        log.warning("the node of %s actor %d died: started again on another node (%d unit(s) to rerun)", model,
                    slot, sum(isinstance(f, _Flight) for _, f in flights))
        self.sched.pools[model][slot] = actor
        self.stats["replaced"] += 1
        self.flights[actor.__ray_ready__.remote()] = _Probe(model, slot,
                                                            time.monotonic() + self.sched.start_timeout_s)

    def _rerun(self, flight: _Flight) -> None:
        """Queue a unit whose actor's node died again, at the front, with the same attempt."""
        self.stats["rerun"] += 1
        err = NodeLostError(f"the node of {flight.model} actor {flight.slot} died while it ran unit {flight.unit.id}")
        log.warning("%s; running it again", err)
        self.submit(flight.unit, flight.attempt, front=True)
        if self.on_retry is not None:
            self.on_retry(flight.unit, err, flight.attempt)

    # ---- actor health ----

    def _kill(self, model: str, slot: int, restart: bool = True) -> None:
        import ray
        ray.kill(self.sched.pools[model][slot], no_restart=not restart)  # restart: Ray starts a fresh engine

    def _recover(self, model: str, slot: int, delay: float = 0.0) -> None:
        """Hold the slot back until a cheap call shows that the (restarted) actor is up:
        calls to a restarting actor fail at once and would burn the unit's retries."""
        self.ready[model].discard(slot)
        if slot in self.live[model]:
            self.due_probes.append((time.monotonic() + delay, model, slot))

    def _send_due_probes(self, now: float) -> None:
        for item in [p for p in self.due_probes if p[0] <= now]:
            self.due_probes.remove(item)
            _, model, slot = item
            if slot in self.live[model]:
                self.flights[self.sched.pools[model][slot].__ray_ready__.remote()] = _Probe(model, slot)

    def _retire(self, model: str, slot: int, why: str) -> None:
        if slot in self.live[model]:
            log.warning("retiring %s actor %d: %s", model, slot, why)
            self.live[model].discard(slot)
            self.ready[model].discard(slot)
            self.stats["retired"] += 1

    def _fail(self, unit: Any, exc: BaseException, attempts: int) -> None:
        self.stats["failed"] += 1
        self.on_failed(unit, exc, attempts)

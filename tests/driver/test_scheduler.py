"""The scheduler against simulated engine actors that sleep (no model, seconds per test):
load balancing, model affinity, bounded in-flight work, retries, restarts and failure
after the last retry."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")

from harness.driver.scheduler import NoLiveActorError, Scheduler
from tests.fakes.sim_actors import SimUnit, make_pools  # noqa: E402


@pytest.fixture(scope="module")
def ray_sim():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


def _run(pools, units, **kw):
    done, failed = [], []
    stats = Scheduler(pools, **kw).run(units, lambda u, r: done.append((u, r)),
                                       lambda u, e, n: failed.append((u, e, n)))
    return stats, done, failed


def test_every_unit_once_and_model_affinity(ray_sim):
    pools = make_pools({"a": 2, "b": 1})
    units = [SimUnit(f"{m}{i}", m, 0.02) for m in "ab" for i in range(6)]
    stats, done, failed = _run(pools, units)
    assert not failed and stats["done"] == 12 and stats["retries"] == 0
    assert sorted(u.id for u, _ in done) == sorted(u.id for u in units)
    for u, r in done:
        assert r["model"] == u.model  # the actor checks it too
    assert {r["actor"] for u, r in done if u.model == "a"} == {"a-0", "a-1"}
    assert {r["actor"] for u, r in done if u.model == "b"} == {"b-0"}


def test_dynamic_load_balancing(ray_sim):
    """One long unit and many short ones on two actors: the short ones go to whichever
    actor is idle, so the run takes about as long as the long unit, not long + half."""
    pools = make_pools({"m": 2})
    units = [SimUnit("long", "m", 1.0)] + [SimUnit(f"s{i}", "m", 0.1) for i in range(9)]
    t0 = time.perf_counter()
    stats, done, _ = _run(pools, units)
    elapsed = time.perf_counter() - t0
    assert stats["done"] == 10
    long_actor = next(r["actor"] for u, r in done if u.id == "long")
    others = [r["actor"] for u, r in done if u.id != "long"]
    assert others.count(long_actor) <= 1
    assert elapsed < 1.45, elapsed  # round robin would need ~1.5 s


def test_bounded_in_flight(ray_sim):
    pools = make_pools({"m": 2}, max_concurrency=8)
    units = [SimUnit(f"u{i}", "m", 0.1) for i in range(12)]
    stats, done, _ = _run(pools, units, max_in_flight=2)
    assert stats["done"] == 12
    peaks = ray.get([a.peak.remote() for a in pools["m"]])
    assert peaks == [2, 2]  # never more than 2 at once, and the bound is used


def test_killed_actor_is_restarted_and_its_unit_retried(ray_sim, tmp_path):
    pools = make_pools({"m": 2})
    before = _pids(pools["m"])
    units = [SimUnit(f"u{i}", "m", 0.05) for i in range(6)]
    units[1] = SimUnit("victim", "m", 0.05, mode="die_once", marker_dir=str(tmp_path))
    stats, done, failed = _run(pools, units)
    assert not failed and stats["done"] == 6 and stats["retries"] == 1
    assert sorted(u.id for u, _ in done) == sorted(u.id for u in units)
    # exactly one actor process was replaced, and the retried unit ran on a live actor
    after = _pids(pools["m"])
    assert len(set(after) - set(before)) == 1
    assert next(r for u, r in done if u.id == "victim")["pid"] in after


def _pids(actors, wait_s: float = 30.0) -> list[int]:
    """Each actor's process id; an actor Ray is still restarting is asked again."""
    from ray.exceptions import ActorUnavailableError
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return ray.get([a.ping.remote() for a in actors])
        except ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_dead_engine_inside_a_live_actor_restarts_the_actor(ray_sim, tmp_path):
    pools = make_pools({"m": 1})
    pid = ray.get(pools["m"][0].ping.remote())
    units = [SimUnit("dead", "m", 0.01, mode="engine_dead_once", marker_dir=str(tmp_path)), SimUnit("next", "m", 0.01)]
    stats, done, failed = _run(pools, units)
    assert not failed and stats["restarts"] == 1 and stats["retries"] == 1
    assert all(r["pid"] != pid for _, r in done)  # a fresh actor process ran both


def test_hung_unit_times_out_restarts_its_actor_and_is_retried(ray_sim, tmp_path):
    pools = make_pools({"m": 2})
    units = [SimUnit("hang", "m", 0.01, mode="hang_once", marker_dir=str(tmp_path))] + \
            [SimUnit(f"u{i}", "m", 0.05) for i in range(4)]
    t0 = time.perf_counter()
    stats, done, failed = _run(pools, units, unit_timeout_s=1.5)
    assert not failed and stats["done"] == 5 and stats["timeouts"] == 1 and stats["retries"] == 1
    assert time.perf_counter() - t0 < 30


def test_hung_unit_fails_with_a_timeout_error_after_its_retries(ray_sim, tmp_path):
    pools = make_pools({"m": 1})
    stats, done, failed = _run(pools, [SimUnit("hang", "m", 0.01, mode="hang_once", marker_dir=str(tmp_path))],
                               unit_timeout_s=1.0, max_retries=0)
    (unit, error, attempts), = failed
    assert isinstance(error, TimeoutError) and "unit_timeout_s" in str(error) and attempts == 1


def test_failed_after_max_retries_and_the_run_goes_on(ray_sim):
    pools = make_pools({"m": 2})
    units = [SimUnit("bad", "m", 0.01, mode="raise")] + [SimUnit(f"u{i}", "m", 0.02) for i in range(5)]
    stats, done, failed = _run(pools, units, max_retries=2)
    assert stats == {"done": 5, "failed": 1, "retries": 2, "restarts": 0, "retired": 0, "timeouts": 0,
                     "node_losses": 0, "replaced": 0, "rerun": 0}
    (unit, error, attempts), = failed
    assert unit.id == "bad" and attempts == 3 and "is bad" in str(error)


def test_permanently_dead_actor_is_retired(ray_sim, tmp_path):
    """An actor with no restarts left would fail every unit sent to it at once; it is
    retired and the other replica finishes the run."""
    pools = make_pools({"m": 2}, max_restarts=0)
    units = [SimUnit("killer", "m", 0.05, mode="die_once", marker_dir=str(tmp_path))] + \
            [SimUnit(f"u{i}", "m", 0.05) for i in range(6)]
    stats, done, failed = _run(pools, units, max_retries=2, retire_after=2)
    assert not failed and stats["done"] == 7 and stats["retired"] == 1
    assert {r["actor"] for _, r in done} == {"m-1"}


def test_no_live_actor_fails_the_rest_without_hanging(ray_sim, tmp_path):
    pools = make_pools({"m": 1, "n": 1}, max_restarts=0)
    units = [SimUnit("killer", "m", 0.05, mode="die_once", marker_dir=str(tmp_path))] + \
            [SimUnit(f"u{i}", "m", 0.01) for i in range(3)] + [SimUnit("other", "n", 0.01)]
    stats, done, failed = _run(pools, units, max_retries=5, retire_after=2)
    assert [u.id for u, _ in done] == ["other"]
    assert sorted(u.id for u, _, _ in failed) == ["killer", "u0", "u1", "u2"]
    assert any(isinstance(e, NoLiveActorError) for _, e, _ in failed)


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one actor"):
        Scheduler({"m": []})
    with pytest.raises(ValueError, match="max_in_flight"):
        Scheduler({"m": [object()]}, max_in_flight=0)



class _Watch:
    """The scheduler's view of nodes (``NodeWatch``), for its bookkeeping alone: replica
    (m, 1) is reported on a dead node once ``lost`` is set; ``replace`` ends its actor and
    hands out ``spare`` (None: no room). The real thing, on real nodes with real kills:
    tests/driver/test_cluster.py."""

    def __init__(self, pools, spare) -> None:
        self.pools, self.spare = pools, spare
        self.lost = False
        self.replaced: list[tuple[str, int]] = []

    def dead_slots(self):
        return [("m", 1)] if self.lost and not self.replaced else []

    def replace(self, model, slot):
        self.replaced.append((model, slot))
        ray.kill(self.pools[model][slot])
        return self.spare


@pytest.mark.parametrize("room", [True, False])
def test_units_of_a_replica_on_a_dead_node_run_again_without_losing_an_attempt(ray_sim, tmp_path, room):
    """Replica 1's two units hang (as calls to a node that stopped answering do) until its
    node is reported dead: they run again at once, still on their first attempt (no retries
    allowed here), on a replica started elsewhere or on the one left."""
    pools = make_pools({"m": 2})
    spare = make_pools({"m": 1})["m"][0] if room else None
    watch = _Watch(pools, spare)
    # dispatch goes to the least-loaded replica, lowest index first: u1 and u3 to replica 1,
    # where u1 hangs and u3 waits behind it
    units = [SimUnit(f"u{i}", "m", 0.1, mode="hang_once" if i == 1 else "ok", marker_dir=str(tmp_path))
             for i in range(8)]
    retried, done = [], []

    def on_done(u, r):
        done.append((u, r))
        watch.lost = True

    stats = Scheduler(pools, max_in_flight=2, max_retries=0, nodes=watch, node_check_s=0.2).run(
        units, on_done, lambda u, e, n: pytest.fail(f"{u.id} failed: {e}"),
        lambda u, e, n: retried.append((u.id, type(e).__name__, n)))
    assert sorted(u.id for u, _ in done) == sorted(u.id for u in units)  # every unit once
    assert sorted(retried) == [("u1", "NodeLostError", 1), ("u3", "NodeLostError", 1)]
    assert stats["node_losses"] == 1 and stats["rerun"] == 2 and watch.replaced == [("m", 1)]
    assert stats["replaced" if room else "retired"] == 1
    assert "m-1" not in {r["actor"] for u, r in done if u.id in ("u1", "u3")}
    for a in pools["m"] + ([spare] if spare else []):
        ray.kill(a)

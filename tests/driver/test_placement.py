"""Engine actors kept between runs (``run(keep_engines=True)``), with stand-in actors that
load nothing: reuse only for the same model, engine options and cores, in the same Ray,
and never a kept actor's CPU reservation in the way of a new run."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from harness.config import resolve_config  # noqa: E402
from harness.driver import placement
from harness.driver.placement import KEPT, cores_of, start_pools


@ray.remote(num_cpus=0)
class StandInEngine:
    def __init__(self, path, options, cores, needs_bos):
        self.binding = options.get("cpu_cores") or cores

    def binding_of(self):
        return self.binding


@pytest.fixture()
def stand_in(monkeypatch, ray_local):
    monkeypatch.setattr(placement, "_ACTOR_CLASS", StandInEngine)
    yield
    KEPT.release()


def pools_for(replicas: int = 1, **engine):
    cfg = resolve_config({"models": [{"model": "smollm2-135m", "replicas": replicas}], "engine": engine,
                          "prompt_sets": ["tiny"], "strategies": [{"name": "greedy"}]}, "t")
    pools, actors = start_pools(cfg, {"smollm2-135m": ("/m/smollm2", False)}, {"smollm2-135m"}, keep_engines=True)
    KEPT.keep(actors)
    return pools["smollm2-135m"]


def ids(actors):
    return [a._actor_id for a in actors]


def test_kept_actor_is_reused_only_for_the_same_model_options_and_cores(stand_in):
    [one] = pools_for(cpu_cores="0")
    two = pools_for(replicas=2)  # replica 0 binds core 0 too: the same engine, reused
    assert ids(two)[0] == one._actor_id and ids(two)[1] != one._actor_id
    assert ray.get([a.binding_of.remote() for a in two]) == ["0", "1"]
    again = pools_for(replicas=2)
    assert ids(again) == ids(two)
    other = pools_for(replicas=2, max_model_len=512)  # other engine options: new actors
    assert not set(ids(other)) & set(ids(two))
    assert ray.get([a.binding_of.remote() for a in other]) == ["0", "1"]  # placed: nothing held their CPUs


def test_a_run_without_keep_releases_the_kept_actors(stand_in):
    pools_for(replicas=2)
    kept = list(KEPT.actors.values())
    cfg = resolve_config({"models": ["smollm2-135m"], "prompt_sets": ["tiny"], "strategies": [{"name": "greedy"}]}, "t")
    pools, _ = start_pools(cfg, {"smollm2-135m": ("/m/smollm2", False)}, {"smollm2-135m"})
    assert KEPT.actors == {} and pools["smollm2-135m"][0]._actor_id not in ids(kept)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(kept[0].binding_of.remote(), timeout=30)
    ray.kill(pools["smollm2-135m"][0])


def test_cores_of():
    assert cores_of("0") == 1 and cores_of("0-1") == 2 and cores_of("0,2-3") == 3


def _nodes(**cpus_gpus):
    """Live nodes as placement reads them from ray.nodes(): id -> address, resources."""
    return {n: {"address": "10.0.0.1", "resources": res} for n, res in cpus_gpus.items()}


def test_replicas_spread_over_the_nodes_with_cpus_never_the_head():
    from harness.driver.placement import assign_nodes
    nodes = _nodes(head={"memory": 1.0}, a={"CPU": 1.0}, b={"CPU": 1.0}, big={"CPU": 4.0})
    # to the node with the fewest replicas per CPU after it, ties to the lower id: by size
    assert assign_nodes(nodes, 2, "CPU") == ["big", "big"]
    six = assign_nodes(nodes, 6, "CPU")
    assert (six.count("big"), six.count("a"), six.count("b")) == (4, 1, 1)
    assert assign_nodes(_nodes(a={"CPU": 1.0}, b={"CPU": 1.0}), 4, "CPU") == ["a", "b", "a", "b"]
    assert "head" not in assign_nodes(nodes, 9, "CPU")


def test_a_replica_no_node_can_take_is_left_to_ray():
    from harness.driver.placement import assign_nodes
    nodes = _nodes(head={"CPU": 0.0}, g={"CPU": 8.0, "GPU": 2.0})
    assert assign_nodes(nodes, 3, "GPU", per_replica=1.0) == ["g", "g", None]  # two GPUs, three replicas
    assert assign_nodes(_nodes(head={"CPU": 0.0}), 2, "CPU") == [None, None]  # no worker up yet (autoscaler)


def test_a_lost_replica_goes_to_the_least_loaded_node_with_room():
    from harness.driver.placement import pick_node
    nodes = _nodes(a={"CPU": 1.0}, b={"CPU": 2.0}, c={"CPU": 2.0, "GPU": 1.0})
    used = {"a": {"CPU": 1.0}, "b": {"CPU": 1.0}, "c": {}}
    assert pick_node(nodes, used, {"CPU": 1.0}) == "c"  # a is full, b half, c empty
    assert pick_node(nodes, used, {"CPU": 1.0, "GPU": 1.0}) == "c"
    assert pick_node(nodes, dict(used, c={"CPU": 2.0}), {"CPU": 1.0}) == "b"
    assert pick_node(nodes, {"a": {"CPU": 1.0}, "b": {"CPU": 2.0}, "c": {"CPU": 2.0}}, {"CPU": 1.0}) is None

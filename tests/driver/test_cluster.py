"""Several Ray nodes on this machine, real node kills (``make test-cluster``).

A head that runs no engine (``num_cpus=0``) and three 1-CPU worker nodes (two hold the
run's two replicas, the third is room for a replica whose node dies), started with
``ray.cluster_utils.Cluster`` (Ray's own multi-node test harness: separate raylets, object
stores and worker processes per node, one GCS), plus nodes with a custom ``sim`` resource
for the simulated actors. The GCS declares a node dead after its health checks fail; the
settings below make that about 2 s here (Ray's defaults: about 15 s, see docs/cluster.md).

- simulated actors (tests/fakes/sim_actors.py) on their own nodes: a replica in a placement
  group whose node is killed is started again on a live node and its units rerun; a replica
  whose node is killed when no live node has room is given up, and the run finishes on the
  others;
- the real engine (SmolLM2, tiny config): units run on both worker nodes, the node id is in
  every row and per unit in run.json, and the report equals a single-node run of the same
  config (scripts/compare-reports);
- a worker node killed (raylet and all, SIGKILL) while its units are in flight: the replica
  is started again on a spare node, only the lost units run again, every row once, the
  same report;
- the driver killed mid-run against the cluster: ``deceval run --resume`` keeps the unit
  files already written and finishes the rest.

Order matters (one cluster per module, the engines of one test reused by the next).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")
ray = pytest.importorskip("ray")

from tests.fakes.ray_nodes import first_unit_meta  # noqa: E402
from tests.fakes.sim_actors import SimActor, SimUnit  # noqa: E402

pytestmark = pytest.mark.cluster
engine = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
#: The GCS's node health checks for these tests: a killed node is declared dead after 4 missed
#: checks 0.5 s apart (about 2 s). Ray's defaults are 5 checks 3 s apart (about 15 s).
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 1000,
          "health_check_failure_threshold": 4}
#: Wait limit for a run to finish once a node is killed: detection (about 2 s here) plus the
#: lost units run again on a survivor, with room for a slow, shared machine.
AFTER_KILL_S = 240
KEY = ["unit_id", "prompt_id", "sample_index"]
PROMPTS = [
    {"id": "capital", "prompt": "The capital of France is", "reference": "Paris"},
    {"id": "count", "prompt": "One, two, three,"},
    {"id": "story", "prompt": "Once upon a time"},
    {"id": "code", "prompt": "def add(a, b):"},
    {"id": "colour", "prompt": "The colour of the sky is"},
    {"id": "recipe", "prompt": "To bake bread you need"},
    {"id": "planet", "prompt": "The largest planet is"},
    {"id": "list", "prompt": "Three fruits: apples,"},
]


class Nodes:
    """The module's cluster: the head, the three engine workers, the sim nodes."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "_system_config": HEALTH})
        self.workers = [self.cluster.add_node(num_cpus=1) for _ in range(3)]
        self.sims = [self.cluster.add_node(num_cpus=0, resources={"sim": 1}) for _ in range(3)]
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return self.cluster.address

    def node(self, node_id: str):
        return next(n for n in self.cluster.list_all_nodes() if n.node_id == node_id)

    def kill(self, node_id: str) -> float:
        """SIGKILL every process of the node (raylet, object store, workers); returns when."""
        node = self.node(node_id)
        at = time.time()
        self.cluster.remove_node(node, allow_graceful=False)
        return at


@pytest.fixture(scope="module")
def nodes():
    from harness.driver.placement import KEPT, start_ray
    was_local = ray.is_initialized()
    if was_local:  # the session's embedded Ray: put back afterwards
        if KEPT.actors:
            KEPT.release()
        ray.shutdown()
    c = Nodes()
    try:
        start_ray(c.address, verbose=False)
        yield c
    finally:
        if ray.is_initialized():
            if KEPT.actors:
                KEPT.release()
            ray.shutdown()
        c.cluster.shutdown()
        if was_local:
            start_ray(None, verbose=False)


# ---- simulated actors on real nodes --------------------------------------------------------------


def _sim_replica(slot: int, node_id: str | None = None, group: bool = False):
    from harness.driver.placement import Replica
    opts = {"num_cpus": 0, "resources": {"sim": 1}, "max_restarts": 1, "max_task_retries": 0}
    return Replica("m", slot, None, node_id, ("m", f"m-{slot}"), opts, {"sim": 1.0},
                   bundles=[{"sim": 1.0}] if group else None, cls=SimActor)


def _sim_run(nodes: Nodes, placement, units: list, victim_slot: int):
    """Run ``units`` on the placement's replicas; on the first unit the victim replica
    finishes (it has more in flight), SIGKILL its node. Returns (results, stats, killed node)."""
    from harness.driver.placement import launch
    from harness.driver.scheduler import Scheduler
    for rep in placement.replicas["m"]:  # one by one: a group placed first could take a pinned one's node
        rep.actor = launch(rep)
        ray.get(rep.actor.ping.remote(), timeout=120)
    killed: list[str] = []
    results: dict[str, list] = {}

    def done(unit, result) -> None:
        results.setdefault(unit.id, []).append(result)
        if not killed and result["actor"] == f"m-{victim_slot}":
            victim = placement.replicas["m"][victim_slot]
            node = victim.node_id or placement._node_of(victim)[0]
            killed.append(node)
            nodes.kill(node)

    failed: list = []
    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(Scheduler(
        placement.pools(), max_in_flight=2, nodes=placement, node_check_s=0.5, start_timeout_s=60).run(
        units, done, lambda u, e, k: failed.append((u.id, e)))), daemon=True)
    runner.start()
    runner.join(AFTER_KILL_S)
    assert not runner.is_alive(), "the run did not finish after the node was killed"
    assert not failed, failed
    return results, out, killed[0]


def _cleanup(placement) -> None:
    for rep in placement.replicas["m"]:
        if rep.actor is not None:
            ray.kill(rep.actor)
        if rep.pg is not None:
            ray.util.remove_placement_group(rep.pg)


def test_replica_in_a_placement_group_whose_node_dies_is_placed_again(nodes, tmp_path):
    from harness.driver.placement import Placement
    placement = Placement()
    placement.add(_sim_replica(0, nodes.sims[0].node_id))
    placement.add(_sim_replica(1, group=True))  # Ray puts its group on one of the two other sim nodes
    units = [SimUnit(f"u{i}", "m", seconds=0.4) for i in range(12)]
    try:
        results, stats, killed = _sim_run(nodes, placement, units, victim_slot=1)
        assert killed != nodes.sims[0].node_id
        assert sorted(results) == sorted(u.id for u in units)  # every unit done ...
        assert all(len(r) == 1 for r in results.values())  # ... once
        assert stats["node_losses"] == 1 and stats["replaced"] == 1 and stats["failed"] == 0
        assert stats["rerun"] + stats["retries"] >= 1  # the lost unit ran again
        [event] = placement.events
        assert event["action"] == "re-placed" and event["lost_node"] == killed and event["slot"] == 1
        # the replica's new group is on the third sim node, and its actor is up there
        again = placement.replicas["m"][1]
        ray.get(again.actor.ping.remote(), timeout=60)
        new_node = placement._node_of(again)
        assert new_node and killed not in new_node and nodes.sims[0].node_id not in new_node
    finally:
        _cleanup(placement)


def test_replica_whose_node_dies_with_no_room_left_is_given_up(nodes):
    from harness.driver.placement import Placement, alive_nodes
    live = sorted(n for n, info in alive_nodes().items() if info["resources"].get("sim"))
    assert len(live) == 2  # the previous test killed one of the three
    placement = Placement()
    placement.add(_sim_replica(0, live[0]))
    placement.add(_sim_replica(1, live[1]))
    units = [SimUnit(f"v{i}", "m", seconds=0.3) for i in range(10)]
    try:
        results, stats, killed = _sim_run(nodes, placement, units, victim_slot=1)
    finally:
        _cleanup(placement)
    assert killed == live[1]
    assert sorted(results) == sorted(u.id for u in units) and all(len(r) == 1 for r in results.values())
    assert stats["node_losses"] == 1 and stats["replaced"] == 0 and stats["retired"] == 1
    assert stats["rerun"] + stats["retries"] >= 1
    [event] = placement.events
    assert event["action"] == "dropped" and "no live node has room" in event["reason"]
    # after the loss only replica 0 ran units
    assert {r["actor"] for rs in results.values() for r in rs} <= {"m-0", "m-1"}


# ---- the real engine --------------------------------------------------------------------------------


def write_config(tmp: Path, name: str = "cluster") -> Path:
    import yaml
    tmp.mkdir(parents=True, exist_ok=True)
    pfile = tmp / "prompts.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    cfg = {
        "run_name": name, "models": [{"model": "smollm2-135m", "replicas": 2}],
        "engine": {"dtype": "auto", "max_model_len": 256, "kv_cache_gib": 1, "block_size": 32,
                   "engine_core_process": False},
        "prompt_sets": [{"path": str(pfile), "name": "clusterset"}],
        "strategies": [{"name": "greedy"}, {"name": "top_p", "top_p": 0.9, "samples_per_prompt": 2}],
        "generation": {"max_tokens": 32, "seed": 0}, "shard_size": 2,
        "output": {"dir": str(tmp / "reports")},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def assert_exactly_once(df, cfg) -> None:
    from harness.plan import make_plan
    from harness.tasks import load_prompt_set
    units = make_plan(cfg, [load_prompt_set(p) for p in cfg.prompt_sets])
    want = {(u.id, p.id, s) for u in units for p in u.prompts for s in range(u.strategy.samples_per_prompt)}
    keys = list(map(tuple, df[KEY].itertuples(index=False)))
    assert len(keys) == len(set(keys)), "duplicated rows"
    assert set(keys) == want, "missing or unexpected rows"


def compare(a: Path, b: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare-reports"), str(a), str(b)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def engine_nodes(nodes: Nodes) -> set[str]:
    from harness.driver.placement import alive_nodes
    return {n for n, info in alive_nodes().items() if info["resources"].get("CPU")}


@pytest.fixture(scope="module")
def single_node_report(tmp_path_factory) -> Path:
    """The same config run on one node: its own embedded Ray in a separate driver process,
    two replicas bound to one core each, as on the cluster."""
    cfg_path = write_config(tmp_path_factory.mktemp("single"))
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(cfg_path), "--no-progress"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    from harness.config import load_config
    cfg = load_config(cfg_path)
    return Path(cfg.output_dir) / cfg.run_id


def _run(cfg_path: Path, address: str, **kw):
    import io

    from harness.config import load_config
    from harness.driver.runner import run
    from harness.report import read_samples
    cfg = load_config(cfg_path)
    outcome = run(cfg, address=address, progress=False, keep_engines=True, out=kw.pop("out", io.StringIO()), **kw)
    return cfg, outcome, read_samples(outcome.run_dir)


@engine
def test_units_run_on_both_worker_nodes_and_match_a_single_node_run(nodes, tmp_path, single_node_report):
    cfg, outcome, df = _run(write_config(tmp_path), nodes.address)
    assert outcome.ok, outcome.units_failed
    assert_exactly_once(df, cfg)
    meta = json.loads((outcome.run_dir / "run.json").read_text())
    workers = {w.node_id for w in nodes.workers}
    unit_nodes = meta["unit_nodes"]
    placed = {r["node_id"] for r in meta["cluster"]["replicas"]}
    assert len(placed) == 2 and placed <= workers  # one replica on each of two worker nodes, none on the head
    assert set(unit_nodes) == set(df["unit_id"]) and set(unit_nodes.values()) == placed  # units ran on both
    assert nodes.cluster.head_node.node_id not in unit_nodes.values()
    assert (df["node_id"] == df["unit_id"].map(unit_nodes)).all()  # every row names its unit's node
    assert sorted(r["cores"] for r in meta["cluster"]["replicas"]) == ["0", "1"]  # one machine: its cores split
    assert not meta["cluster"]["events"]
    compare(single_node_report, outcome.run_dir)


def _run_with(killer: threading.Thread, cfg_path: Path, nodes: Nodes, timeout: float, stalled: str):
    """Run the config on the cluster in a thread while ``killer`` watches it; the run's
    (cfg, outcome, df) by name, and what it printed."""
    import io
    result: dict = {}
    out = io.StringIO()
    runner = threading.Thread(target=lambda: result.update(zip(("cfg", "outcome", "df"),
                                                                _run(cfg_path, nodes.address, out=out))), daemon=True)
    killer.start()
    runner.start()
    runner.join(timeout)
    killer.stop.set()
    assert not runner.is_alive(), stalled
    return result, out


class NodeKiller(threading.Thread):
    """Once the first unit file is written, SIGKILL the node (raylet, object store, workers)
    of the engine that wrote it: that engine has its next unit in flight."""

    def __init__(self, nodes: Nodes, run_dir: Path) -> None:
        super().__init__(daemon=True)
        self.nodes, self.run_dir = nodes, run_dir
        self.killed: str | None = None
        self.killed_at: float | None = None
        self.doomed: list = []  # the killed engine's processes, which must be gone afterwards
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            meta = first_unit_meta(self.run_dir)
            if meta:
                actor = psutil.Process(meta["engine"]["pid"])
                self.doomed = [actor, *actor.children(recursive=True)]
                self.killed = meta["engine"]["node_id"]
                self.killed_at = self.nodes.kill(self.killed)
                return
            time.sleep(0.05)


@engine
def test_worker_node_killed_mid_run_replica_placed_again_rows_once(nodes, tmp_path, single_node_report):
    """The engines of the previous test are reused (same nodes, same cores): the kill hits a
    warm engine with units in flight; the third worker node is free for its replica."""
    from harness.config import load_config
    from harness.driver.placement import alive_nodes
    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path)
    killer = NodeKiller(nodes, Path(cfg.output_dir) / cfg.run_id)
    result, out = _run_with(killer, cfg_path, nodes, 900, "the run did not finish")
    assert killer.killed, "no node was killed: the run ended before the first unit file appeared?"
    outcome, df = result["outcome"], result["df"]
    assert outcome.ok, outcome.units_failed
    assert_exactly_once(df, cfg)
    # The killed engine's unit in flight ran again: as an ordinary retry when Ray failed the
    # call first (the actor's process is gone), as a NodeLostError when the node was declared
    # dead first.
    lost = outcome.retries
    assert lost, "no unit was in flight on the killed node?"
    first = min(r["at"] for r in lost) - killer.killed_at
    print(f"node killed: its unit queued again {first:.1f} s later ({lost[0]['error']}); node declared dead, "
          f"replica started again {json.loads((outcome.run_dir / 'run.json').read_text())['cluster']['events'][0]['at'] - killer.killed_at:.1f} s later")
    meta = json.loads((outcome.run_dir / "run.json").read_text())
    [event] = meta["cluster"]["events"]
    placed = {r["node_id"] for r in meta["cluster"]["replicas"]}
    [spare] = {w.node_id for w in nodes.workers} - placed  # the worker node no replica was on
    assert event["lost_node"] == killer.killed and event["action"] == "re-placed" and event["node_id"] == spare
    assert killer.killed in placed and spare in {r["node_id"] for r in meta["cluster"]["replicas_at_end"]}
    assert killer.killed not in alive_nodes()
    assert f"node {killer.killed} died" in out.getvalue() and f"started again on node {spare}" in out.getvalue()
    # every unit file was written once, by an engine on a live node
    assert killer.killed not in {meta["unit_nodes"][u] for u in {r["unit_id"] for r in lost}}
    compare(single_node_report, outcome.run_dir)
    _gone, alive = psutil.wait_procs(killer.doomed, timeout=60)
    assert not alive, f"processes of the killed node's engine outlived it: {[p.pid for p in alive]}"


@engine
def test_driver_killed_mid_run_on_the_cluster_resume_skips_written_units(nodes, tmp_path, single_node_report):
    from harness.config import load_config
    from harness.driver.placement import KEPT
    if KEPT.actors:  # the CPUs of the two worker nodes go to the driver started below
        KEPT.release()
    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path)
    run_dir = Path(cfg.output_dir) / cfg.run_id
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(cfg_path), "--address", nodes.address,
                             "--no-progress"], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if run_dir.exists() and len(list((run_dir / "samples").rglob("*.parquet"))) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the driver ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "samples").rglob("*.parquet")}
    assert 2 <= len(before) < 8
    # its actors die with their owner; the resumed run places its own on the same nodes
    cfg, outcome, df = _run(cfg_path, nodes.address, run_id=cfg.run_id)
    assert outcome.ok and outcome.units_skipped == len(before) and outcome.units_done == 8 - len(before)
    assert all(p.stat().st_mtime_ns == m for p, m in before.items()), "a written unit was generated again"
    assert_exactly_once(df, cfg)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and set(meta["unit_nodes"].values()) <= engine_nodes(nodes)
    compare(single_node_report, run_dir)


class StartKiller(threading.Thread):
    """SIGKILL the first worker node on which an engine actor process appears, while that
    engine is still starting (no unit file written yet)."""

    def __init__(self, nodes: Nodes, run_dir: Path) -> None:
        super().__init__(daemon=True)
        self.nodes, self.run_dir = nodes, run_dir
        self.killed: str | None = None
        self.killed_at: float | None = None
        self.units_before_kill: int | None = None
        self.stop = threading.Event()

    def _starting_engine_node(self) -> str | None:
        from ray._private import ray_constants
        for node in self.nodes.cluster.list_all_nodes():
            if node is self.nodes.cluster.head_node or node.node_id not in {w.node_id for w in self.nodes.workers}:
                continue
            raylet = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET)
            try:
                kids = psutil.Process(raylet[0].process.pid).children(recursive=True) if raylet else []
                if any("EngineActor" in " ".join(p.cmdline()) for p in kids):
                    return node.node_id
            except psutil.Error:
                continue
        return None

    def run(self) -> None:
        while not self.stop.is_set():
            node = self._starting_engine_node()
            if node:
                self.units_before_kill = len(list((self.run_dir / "samples").rglob("*.parquet"))) \
                    if self.run_dir.exists() else 0
                self.killed = node
                self.killed_at = self.nodes.kill(node)
                return
            time.sleep(0.05)


@engine
def test_worker_node_killed_while_its_engine_starts_replica_placed_again_rows_once(nodes, tmp_path,
                                                                                    single_node_report):
    """The case a user met: a node lost while its engine loads. A fresh worker node joins first,
    so the lost replica has somewhere to go; the run notices (health checks, about 2 s here),
    starts the replica there and finishes with every row once, as on one node."""
    from harness.config import load_config
    from harness.driver.placement import KEPT
    if KEPT.actors:  # fresh engines: the kill must land while one loads
        KEPT.release()
    nodes.workers.append(nodes.cluster.add_node(num_cpus=1))
    nodes.cluster.wait_for_nodes()
    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path)
    killer = StartKiller(nodes, Path(cfg.output_dir) / cfg.run_id)
    result, out = _run_with(killer, cfg_path, nodes, AFTER_KILL_S + 300,
                            "the run did not finish after a node died while its engine started")
    assert killer.killed and killer.units_before_kill == 0, "the kill did not land while an engine was starting"
    outcome, df = result["outcome"], result["df"]
    assert outcome.ok, outcome.units_failed
    assert_exactly_once(df, cfg)
    meta = json.loads((outcome.run_dir / "run.json").read_text())
    assert killer.killed not in set(meta["unit_nodes"].values())  # its engine never wrote a unit
    # Two outcomes are seen, by which Ray reports first: the node declared dead (the replica is
    # started again elsewhere, an event in run.json and a line in the output), or the starting
    # actor failed for good first (it is retired, the run goes on with the other replica).
    events = meta["cluster"]["events"]
    if events:
        [event] = events
        assert event["lost_node"] == killer.killed and event["action"] == "re-placed"
        assert f"node {killer.killed} died" in out.getvalue()
        print(f"node killed while its engine started; replica started again on node {event['node_id']} "
              f"{event['at'] - killer.killed_at:.1f} s later")
    compare(single_node_report, outcome.run_dir)

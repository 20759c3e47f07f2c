"""Reliability on the real engine (SmolLM2-135M; gemma3-270m for the two-model run), with
the session's embedded Ray (conftest ``ray_local``). Kept tiny: a dozen units of a few tokens each.

- two engine replicas write the same rows as one (seeds do not depend on the actor);
- a two-model run loads each model once and sends every unit to its own model's actor;
- an engine actor's process (or its vLLM engine-core process) killed mid-run: the run
  completes with every expected row exactly once, equal to the undisturbed run;
- the driver killed mid-run: a rerun resumes without regenerating finished units, and the
  final dataset equals the undisturbed run;
- bad prompts (empty, blank, longer than the context) become error rows; the run succeeds.

The tests run in file order, each reusing the engine actors the one before left loaded
(``keep_engines``) where their bindings agree: eight engine starts for the module, not thirteen.
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

from tests.fakes.ray_nodes import first_unit_meta

psutil = pytest.importorskip("psutil")
engine = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]

GOOD = [
    {"id": "capital", "prompt": "The capital of France is", "reference": "Paris"},
    {"id": "count", "prompt": "One, two, three,"},
    {"id": "story", "prompt": "Once upon a time"},
    {"id": "unicode", "prompt": "Übersetze ins Englische: «Grüß dich» 🙂\u200b — "},
    {"id": "code", "prompt": "def add(a, b):"},
]
BAD = [
    {"id": "empty", "prompt": ""},
    {"id": "blank", "prompt": "   \n\t "},
    {"id": "too_long", "prompt": "lorem ipsum dolor sit amet " * 120},  # > max_model_len 256
]
KEY = ["unit_id", "prompt_id", "sample_index"]
COLS = ["model", "strategy_label", "seed", "prompt_tokens", "completion", "completion_tokens", "finish_reason", "error"]


def write_config(tmp: Path, *, replicas: int = 1, cores: str | None = None,
                 models: tuple[str, ...] = ("smollm2-135m",), prompts: list[dict] | None = None,
                 shard_size: int = 2, engine_core_process: bool = False) -> Path:
    prompts = GOOD[:3] + BAD[:1] + GOOD[3:] + BAD[1:] if prompts is None else prompts
    tmp.mkdir(parents=True, exist_ok=True)
    pfile = tmp / "faultset.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    # float32: a rerun in a fresh engine must give the same tokens (bf16 batches may not)
    engine = {"dtype": "float32", "max_model_len": 256, "kv_cache_gib": 1, "block_size": 32,
              "engine_core_process": engine_core_process}
    if cores:
        engine["cpu_cores"] = cores
    cfg = {
        "run_name": "faults", "models": [{"model": m, "replicas": replicas} for m in models], "engine": engine,
        "prompt_sets": [{"path": str(pfile), "name": "faultset"}],
        "strategies": [{"name": "greedy"}, {"name": "top_p", "top_p": 0.9, "samples_per_prompt": 2},
                       {"name": "min_p", "min_p": 0.1}],
        "generation": {"max_tokens": 10, "seed": 0}, "shard_size": shard_size,
        "output": {"dir": str(tmp / "reports")},
    }
    import yaml
    path = tmp / "faults.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def expected_keys(cfg) -> set[tuple]:
    from harness.plan import make_plan
    from harness.tasks import load_prompt_set
    units = make_plan(cfg, [load_prompt_set(p) for p in cfg.prompt_sets])
    return {(u.id, p.id, s) for u in units for p in u.prompts for s in range(u.strategy.samples_per_prompt)}


def canon(df):
    out = df[KEY + COLS].sort_values(KEY).reset_index(drop=True)
    # error texts name the prompt file, which lives in each test's own tmp folder
    out["error"] = out["error"].str.replace(r" \(/[^)]*\)", "", regex=True)
    return out


def assert_exactly_once(df, cfg) -> None:
    keys = list(map(tuple, df[KEY].itertuples(index=False)))
    assert len(keys) == len(set(keys)), "duplicated rows"
    assert set(keys) == expected_keys(cfg), "missing or unexpected rows"


def unit_metas(run_dir: Path) -> list[dict]:
    from harness.report import unit_meta
    return [unit_meta(p) for p in sorted((run_dir / "samples").rglob("*.parquet"))]


def _run(cfg_path: Path):
    """One run; its engine actors stay loaded for the next run of this module that binds the
    same cores (each start costs 30-50 s), and are released at the module's end."""
    from harness.config import load_config
    from harness.driver.runner import run
    from harness.report import read_samples
    cfg = load_config(cfg_path)
    outcome = run(cfg, progress=False, keep_engines=True)
    return cfg, outcome, read_samples(outcome.run_dir)


@pytest.fixture(scope="module", autouse=True)
def _release_kept_engines():
    yield
    from harness.driver.placement import KEPT
    if KEPT.actors:
        KEPT.release()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_local):
    """The undisturbed run: one engine bound to core 0 (the same thread count as each
    replica of a two-replica run, so the numerics match)."""
    cfg, outcome, df = _run(write_config(tmp_path_factory.mktemp("ref"), cores="0"))
    assert outcome.ok, outcome.units_failed
    assert_exactly_once(df, cfg)
    return canon(df)


# ---- bad input -------------------------------------------------------------------------------


@engine
def test_bad_prompts_become_error_rows(reference):
    bad = reference[reference["prompt_id"].isin([p["id"] for p in BAD])]
    good = reference[reference["prompt_id"].isin([p["id"] for p in GOOD])]
    assert len(bad) and bad["error"].notna().all() and (bad["finish_reason"] == "error").all()
    assert bad[bad["prompt_id"] == "empty"]["error"].str.contains("empty").all()
    assert bad[bad["prompt_id"] == "too_long"]["error"].str.contains("max_model_len").all()
    assert good["error"].isna().all() and (good["completion_tokens"] > 0).all()
    cap = good[(good["prompt_id"] == "capital") & (good["strategy_label"] == "greedy")]["completion"].iloc[0]
    assert "Paris" in cap


# ---- replicas --------------------------------------------------------------------------------


@engine
def test_two_replicas_write_the_same_rows_as_one(reference, tmp_path, ray_local):
    cfg, outcome, df = _run(write_config(tmp_path, replicas=2))
    assert outcome.ok
    assert_exactly_once(df, cfg)
    pids = {m["engine"]["pid"] for m in unit_metas(outcome.run_dir)}
    cores = {m["engine"]["cpu_cores"] for m in unit_metas(outcome.run_dir)}
    assert len(pids) == 2 and cores == {"0", "1"}  # both replicas worked, each on its own core
    import pandas.testing as pdt
    pdt.assert_frame_equal(canon(df), reference)


# ---- faults ----------------------------------------------------------------------------------


#: vLLM's own processes under an engine actor, by kill target: the engine core (in a process
#: of its own with engine_core_process: true, the default) and the model worker.
ENGINE_PROCESS_TAGS = {"engine_core": "EngineCore", "worker": "VLLM::Worker"}


class Killer(threading.Thread):
    """Once the first unit file is written, SIGKILL the process of the engine actor that
    wrote it ("actor"), or that actor's vLLM engine-core process ("engine_core") or model
    worker process ("worker")."""

    def __init__(self, run_dir: Path, target: str) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.target = run_dir, target
        self.killed: list[int] = []
        self.killed_at: float | None = None  # epoch seconds of the kill
        self.doomed: list = []  # processes that must be gone after the run
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            meta = first_unit_meta(self.run_dir)
            if meta:
                actor = psutil.Process(meta["engine"]["pid"])
                kids = actor.children(recursive=True)
                if self.target == "actor":
                    victims = [actor]
                    self.doomed = [actor, *kids]
                else:
                    tag = ENGINE_PROCESS_TAGS[self.target]
                    victims = [p for p in kids if tag in " ".join(p.cmdline()) or tag in p.name()]
                    # no fallback: a kill that hits the wrong process would prove nothing
                    self.doomed = [actor, *kids]  # the scheduler restarts the whole actor
                for p in victims:
                    p.send_signal(signal.SIGKILL)
                    self.killed.append(p.pid)
                self.killed_at = time.time()
                return
            time.sleep(0.1)


def _reap(procs: list, timeout: float = 30) -> list[int]:
    """Wait for processes that should be gone; kill (by pid) and report any left over."""
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    return [p.pid for p in alive]


def _killed_mid_run(reference, tmp_path: Path, target: str, *, engine_core_process: bool) -> None:
    """A two-replica run whose `target` process is SIGKILLed once the first unit file is
    written: it completes with every row exactly once, equal to the undisturbed run, and no
    process of the killed engine outlives it."""
    from harness.config import load_config
    cfg_path = write_config(tmp_path, replicas=2, engine_core_process=engine_core_process)
    cfg = load_config(cfg_path)
    killer = Killer(Path(cfg.output_dir) / cfg.run_id, target)
    killer.start()
    try:
        cfg, outcome, df = _run(cfg_path)
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed, "nothing was killed: the run ended before the first unit file appeared?"
    assert outcome.ok, outcome.units_failed
    assert_exactly_once(df, cfg)
    # With the default settings (unit timeout 3600 s) the dead engine is noticed at once: the
    # failed unit is queued again well within the 60 s the project promises.
    assert outcome.retries, "the kill cost no unit an attempt: was a unit in flight?"
    delay = min(r["at"] for r in outcome.retries) - killer.killed_at
    print(f"{target} killed: first retry queued {delay:.1f} s later ({outcome.retries[0]['error']})")
    assert -1 < delay < 60, (delay, outcome.retries)
    assert json.loads((outcome.run_dir / "run.json").read_text())["retries"] == outcome.retries
    import pandas.testing as pdt
    # The same units as the undisturbed run, so the same rows. (Only the same units: in bf16
    # a prompt batched with other prompts may sample differently, so a sample depends on its
    # unit, as the plan's seeding promises, not only on prompt, index and seed.)
    pdt.assert_frame_equal(canon(df), reference)
    leftovers = _reap(killer.doomed)
    assert not leftovers, f"processes of the killed engine outlived it: {leftovers}"


@engine
@pytest.mark.parametrize("target", ["actor", "worker"])
def test_engine_killed_mid_run_every_row_exactly_once(reference, tmp_path, ray_local, target, monkeypatch):
    """The tests' engine layout (engine core in the actor, model worker apart), on the two
    replicas the previous test left loaded. Default settings: no unit timeout shorter than
    the default 3600 s; the actor's watchdog must notice the dead engine."""
    monkeypatch.delenv("DECEVAL_UNIT_TIMEOUT_S", raising=False)
    _killed_mid_run(reference, tmp_path, target, engine_core_process=False)


@engine
def test_driver_killed_mid_run_rerun_resumes(reference, tmp_path, ray_local):
    from harness.config import load_config
    cfg_path = write_config(tmp_path, cores="0")
    cfg = load_config(cfg_path)
    run_dir = Path(cfg.output_dir) / cfg.run_id
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(cfg_path), "--no-progress"],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    descendants: list = []
    try:
        deadline = time.time() + 420
        while time.time() < deadline and proc.poll() is None:
            try:
                descendants = psutil.Process(proc.pid).children(recursive=True) or descendants
            except psutil.Error:
                pass
            if len(list((run_dir / "samples").rglob("*.parquet"))) >= 2 if run_dir.exists() else False:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the driver ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its process group, like a crash
    finally:
        proc.wait(30)
        # Ray's own processes of the killed driver: ended here, not this test's subject.
        _reap(descendants, timeout=20)
    files_before = {p: p.stat().st_mtime_ns for p in (run_dir / "samples").rglob("*.parquet")}
    assert 2 <= len(files_before) < 12
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"

    cfg, outcome, df = _run(cfg_path)
    assert outcome.ok and outcome.units_skipped == len(files_before)
    assert outcome.units_done == outcome.units_total - len(files_before)
    for path, mtime in files_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path.name} was regenerated"
    assert_exactly_once(df, cfg)
    import pandas.testing as pdt
    pdt.assert_frame_equal(canon(df), reference)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"


# ---- two models ------------------------------------------------------------------------------


@engine
def test_two_models_load_once_and_keep_affinity(tmp_path, ray_local):
    """Both models bound to core 0: the SmolLM2 actor the previous test left loaded is reused."""
    from harness.models import prepare
    prepare("gemma3-270m")  # converted once (about a minute), cached after
    cfg, outcome, df = _run(write_config(tmp_path, models=("smollm2-135m", "gemma3-270m"), prompts=GOOD[:4],
                                    cores="0"))
    assert outcome.ok
    assert_exactly_once(df, cfg)
    by_model: dict[str, set] = {}
    for path in (outcome.run_dir / "samples").rglob("*.parquet"):
        model = path.parent.parent.name.removeprefix("model=")
        from harness.report import unit_meta
        engine = unit_meta(path)["engine"]
        assert model in engine["model_path"], (model, engine)  # every unit ran on its own model's actor
        by_model.setdefault(model, set()).add(engine["pid"])
    assert set(by_model) == {"smollm2-135m", "gemma3-270m"}
    assert all(len(p) == 1 for p in by_model.values()), by_model  # each model loaded once
    assert not by_model["smollm2-135m"] & by_model["gemma3-270m"]
    assert df[df["model"] == "gemma3-270m"]["error"].isna().all()


@engine
def test_engine_core_killed_mid_run_every_row_exactly_once(reference, tmp_path, ray_local, monkeypatch):
    """vLLM's own layout (engine core in a process of its own, the default): the engine-core
    process is killed. Last in the module: its two new actors match no other test's. Default
    settings, as above."""
    monkeypatch.delenv("DECEVAL_UNIT_TIMEOUT_S", raising=False)
    _killed_mid_run(reference, tmp_path, "engine_core", engine_core_process=True)


# ---- without the engine ----------------------------------------------------------------------


def test_resume_into_a_folder_of_another_config_is_refused(tmp_path):
    """--resume RUN_ID with a changed config would keep the old plan's unit files beside the
    new ones (their ids differ), duplicating rows: refused before anything runs."""
    from harness.config import load_config
    from harness.driver.runner import _check_resumable
    from harness.errors import ConfigError
    from harness.plan import make_plan
    from harness.tasks import load_prompt_set
    cfg = load_config(write_config(tmp_path))
    units = make_plan(cfg, [load_prompt_set(p) for p in cfg.prompt_sets])
    run_dir = tmp_path / "reports" / "r"
    own = run_dir / "samples" / units[0].relpath
    own.parent.mkdir(parents=True)
    own.write_bytes(b"x")
    _check_resumable(run_dir, units)  # its own files: fine (validity is checked per unit later)
    (run_dir / "samples" / "model=smollm2-135m" / "strategy=greedy" / ".tmp-half.parquet").write_bytes(b"")
    _check_resumable(run_dir, units)  # a temporary file left by a crash: ignored
    foreign = run_dir / "samples" / "model=smollm2-135m" / "strategy=greedy" / "0123456789abcdef.parquet"
    foreign.write_bytes(b"x")
    with pytest.raises(ConfigError, match="another plan"):
        _check_resumable(run_dir, units)


def test_unit_for_a_model_without_a_pool_is_a_clear_error():
    from harness.driver.scheduler import Scheduler
    from tests.fakes.sim_actors import SimUnit
    with pytest.raises(KeyError, match="no engine pool"):
        Scheduler({"a": [object()]}).run([SimUnit("u", "b")], lambda *a: None, lambda *a: None)


@pytest.mark.parametrize("args, message", [
    (["--env", "NOVALUE"], "expected KEY=VALUE"),
    (["--date", "2025-13-01"], "month must be in 1..12"),
])
def test_bad_submit_arguments(args, message, monkeypatch, capsys):
    from harness.cli import main
    monkeypatch.chdir(ROOT)
    code = main(["submit", "configs/smoke.yaml", "--dry-run", *args])
    assert code == 2 and message in capsys.readouterr().err

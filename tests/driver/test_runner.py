"""Resume and writing, without an engine: the runner's whole path with the engine pools and
the scheduler replaced by a stand-in that makes rows the way the worker does.

- a unit file whose data pages are corrupt but whose footer is intact is not done: it is
  moved aside and redone, never skipped;
- an exception while scoring or writing a unit fails that unit, not the run; run.json ends
  "failed" with the reason, and a rerun redoes only that unit;
- one driver per run folder (a lock); run.json is replaced atomically;
- run ids and --resume ids are folder names; a model's name with '/' or '..' stays in the
  rows while its partition folder is a slug; nothing is written outside the output folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.config import resolve_config
from harness.driver import runner
from harness.errors import ConfigError, RunInUseError, UnsafePathError
from harness.report import (
    RunLock,
    inside,
    read_samples,
    unit_done,
    unit_problem,
    write_run_json,
    write_unit,
)
from harness.rows import new_row, sample_schema
from tests.fakes.rows import corrupt_data_pages, make_rows

ROOT = Path(__file__).resolve().parents[2]


class StandInScheduler:
    """Runs each unit "on an engine" by making its rows as the worker does (completion
    "Paris"); ``poison`` maps a unit index to a row field to corrupt (its write then fails)."""

    poison: dict[int, dict] = {}
    ran: list[str] = []

    def __init__(self, pools, **kwargs) -> None:
        pass

    def run(self, units, on_done, on_failed, on_retry=None):
        from harness.engine.worker import UnitResult
        for i, unit in enumerate(units):
            rows = []
            for p in unit.prompts:
                for k in range(unit.strategy.samples_per_prompt):
                    row = new_row(unit, p, k, unit.seed * 1000 + k)
                    row.update(completion=" Paris", completion_tokens=2, prompt_tokens=6, finish_reason="stop",
                               latency_s=0.01, unit_seconds=0.02)
                    row.update(self.poison.get(i, {}))
                    rows.append(row)
            type(self).ran.append(unit.id)
            on_done(unit, UnitResult(unit.id, rows, 0.02, 2 * len(rows), {"pid": 0}))
        return {}


class _NoKept:
    def keep(self, actors) -> None:
        pass

    def release(self) -> None:
        pass


@pytest.fixture()
def stand_in(monkeypatch):
    monkeypatch.setattr(runner, "start_ray", lambda *a, **k: None)
    monkeypatch.setattr(runner, "start_pools", lambda *a, **k: ({}, {}))
    monkeypatch.setattr(runner, "KEPT", _NoKept())
    monkeypatch.setattr(runner, "Scheduler", StandInScheduler)
    StandInScheduler.poison, StandInScheduler.ran = {}, []
    return StandInScheduler


def make_cfg(tmp_path: Path, **over):
    model = tmp_path / "tiny-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 32}))
    prompts = tmp_path / "qs.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?", "reference": "Paris"}) + "\n"
                               for i in range(6)))
    raw = {"run_name": "resume", "models": [{"model": str(model), "name": over.pop("model_name", "tiny")}],
           "prompt_sets": [{"path": str(prompts), "name": "qs"}], "strategies": [{"name": "greedy"},
                                                                                  {"name": "top_p", "top_p": 0.9}],
           "generation": {"max_tokens": 4, "seed": 0}, "shard_size": 2, "metrics": ["contains_answer"],
           "output": {"dir": str(tmp_path / "reports"), **over.pop("output", {})}, **over}
    return resolve_config(raw, str(tmp_path / "resume.yaml"))


def run_quiet(cfg, **kw):
    import io

    return runner.run(cfg, out=io.StringIO(), progress=False, **kw)


# ---- corrupt files are redone, never skipped ---------------------------------------------------


def test_unit_with_corrupt_pages_but_intact_footer_is_not_done(tmp_path):
    schema = sample_schema(["exact_match"])
    rel = "model=m/strategy=greedy/u1.parquet"
    path = write_unit(tmp_path, rel, make_rows("u1", 3, "greedy"), schema, {"unit_id": "u1", "rows": 3})
    assert unit_done(tmp_path, rel, "u1", 3, schema)
    corrupt_data_pages(path)
    problem = unit_problem(tmp_path, rel, "u1", 3, schema)
    assert problem and problem.startswith("does not read back"), problem
    assert not unit_done(tmp_path, rel, "u1", 3, schema)


def test_rerun_moves_a_corrupt_unit_aside_and_redoes_only_it(tmp_path, stand_in):
    cfg = make_cfg(tmp_path)
    first = run_quiet(cfg)
    assert first.ok and first.units_done == first.units_total == 6
    files = sorted((first.run_dir / "samples").rglob("*.parquet"))
    victim = files[0]
    corrupt_data_pages(victim)
    stand_in.ran = []
    again = run_quiet(cfg)
    assert again.ok and again.units_skipped == 5 and again.units_done == 1
    assert stand_in.ran == [victim.stem]  # only the corrupt unit ran again
    aside = list(victim.parent.glob(".corrupt-*"))
    assert len(aside) == 1 and aside[0].name.endswith(victim.name)
    assert unit_done(again.run_dir, str(victim.relative_to(again.run_dir / "samples")), victim.stem, 2)
    meta = json.loads((again.run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and meta["set_aside"][0]["problem"].startswith("does not read back")
    assert len(read_samples(again.run_dir)) == 12  # the set-aside copy is not read as data


# ---- a unit that cannot be written fails alone -------------------------------------------------


@pytest.mark.parametrize("poison, why", [
    ({"prompt": "bad \udc80 surrogate"}, "surrogate"),   # a lone surrogate cannot be UTF-8
    ({"seed": 10**26}, "int"),                        # does not fit the int64 seed column
])
def test_exception_while_writing_fails_that_unit_not_the_run(tmp_path, stand_in, poison, why):
    cfg = make_cfg(tmp_path)
    stand_in.poison = {1: poison}
    outcome = run_quiet(cfg)
    assert outcome.units_done == 5 and len(outcome.units_failed) == 1
    failed = outcome.units_failed[0]
    assert failed["stage"] == "scoring or writing" and why in failed["error"].lower()
    meta = json.loads((outcome.run_dir / "run.json").read_text())
    assert meta["status"] == "failed" and "1 unit(s) failed" in meta["error"]
    assert meta["failed_units"][0]["unit_id"] == failed["unit_id"]
    assert not list((outcome.run_dir / "samples").rglob(".*tmp*")), "temporary file left behind"
    # the rerun redoes only the failed unit
    stand_in.poison, stand_in.ran = {}, []
    again = run_quiet(cfg)
    assert again.ok and again.units_skipped == 5 and stand_in.ran == [failed["unit_id"]]
    assert json.loads((again.run_dir / "run.json").read_text())["status"] == "complete"


def test_a_crash_mid_run_leaves_run_json_failed_with_the_reason(tmp_path, stand_in, monkeypatch):
    cfg = make_cfg(tmp_path)

    def crash(self, units, on_done, on_failed, on_retry=None):
        raise RuntimeError("the cluster went away")
    monkeypatch.setattr(StandInScheduler, "run", crash)
    with pytest.raises(RuntimeError, match="went away"):
        run_quiet(cfg)
    meta = json.loads((Path(cfg.output_dir) / cfg.run_id / "run.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "RuntimeError: the cluster went away"


# ---- one driver per folder; atomic run.json ------------------------------------------------------


def test_second_driver_on_the_same_run_folder_is_refused(tmp_path, stand_in):
    cfg = make_cfg(tmp_path)
    run_dir = Path(cfg.output_dir) / cfg.run_id
    with RunLock(run_dir):
        with pytest.raises(RunInUseError, match="in use by another deceval driver"):
            run_quiet(cfg)
    assert not (run_dir / "samples").exists()  # refused before anything was written
    assert run_quiet(cfg).ok  # the lock is gone with its holder


def test_lock_held_by_another_process_refuses_and_dies_with_it(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from harness.report import RunLock
        with RunLock({str(run_dir)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"pid {holder.pid}"):
            RunLock(run_dir).__enter__()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run_dir):  # a killed holder leaves no stale lock
        pass


def test_run_json_is_replaced_atomically(tmp_path, monkeypatch):
    write_run_json(tmp_path, {"status": "running"})

    def torn(self, text, *a, **k):
        Path.write_bytes(self, text[:5].encode())
        raise OSError("disk full")
    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError, match="disk full"):
        write_run_json(tmp_path, {"status": "complete", "x": "y" * 100})
    monkeypatch.undo()
    assert json.loads((tmp_path / "run.json").read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left


# ---- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["/etc", "..", ".", "../x", "a/b", "", "x" * 200, "a b"])
def test_output_run_id_must_be_a_folder_name(tmp_path, run_id):
    with pytest.raises(ConfigError, match="output.run_id: a run id must be"):
        make_cfg(tmp_path, output={"run_id": run_id})


def test_resume_id_must_be_a_folder_name(tmp_path, stand_in):
    cfg = make_cfg(tmp_path)
    with pytest.raises(ConfigError, match="--resume: a run id must be"):
        run_quiet(cfg, run_id="../../x")
    assert not (tmp_path.parent / "x").exists() and not (tmp_path / "x").exists()


def test_cli_resume_outside_the_output_folder_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from harness.cli import main
    monkeypatch.chdir(ROOT)
    assert main(["run", "configs/smoke.yaml", "--resume", "../../x", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--resume: a run id must be" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["org/model", "../../evil", "a\\b"])
def test_model_name_is_a_slug_on_disk_and_itself_in_the_rows(tmp_path, stand_in, name):
    cfg = make_cfg(tmp_path, model_name=name)
    outcome = run_quiet(cfg)
    assert outcome.ok
    samples = (outcome.run_dir / "samples").resolve()
    files = list(samples.rglob("*.parquet"))
    assert len(files) == 6
    assert all(f.resolve().parent.parent.parent == samples for f in files)  # model=<slug>/strategy=<s>/<unit>
    assert len({f.parent.parent.name for f in files}) == 1 and "/" not in files[0].parent.parent.name[6:]
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()
    df = read_samples(outcome.run_dir)
    assert set(df["model"]) == {name} and set(df["model_name"]) == {name}


def test_model_names_with_the_same_slug_are_refused(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="map to the same report folder"):
        resolve_config({"models": [{"model": str(model), "name": "org/m"}, {"model": str(model), "name": "org_m"}],
                        "prompt_sets": ["tiny"], "strategies": [{"name": "greedy"}]}, "two.yaml")


def test_nothing_is_written_through_a_link_out_of_the_output_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    run_dir = tmp_path / "reports" / "r"
    (run_dir / "samples").mkdir(parents=True)
    (run_dir / "samples" / "model=m").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        write_unit(run_dir, "model=m/strategy=greedy/u1.parquet", make_rows("u1", 1, "greedy"), sample_schema([]),
                   {"unit_id": "u1"})
    assert not list(outside.rglob("*"))
    with pytest.raises(UnsafePathError):
        inside(tmp_path / "reports", tmp_path / "reports" / ".." / "elsewhere")

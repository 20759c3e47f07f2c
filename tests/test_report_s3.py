"""Reports in object storage, against a real S3 server (moto's server mode, ``s3_server`` in
tests/conftest.py) through pyarrow's own S3 filesystem; engines are stood in for by the
scripted runner (tests/fakes/scripted_runner.py), so the runner, report writer and readers
are the real ones.

- a run with ``output.dir: s3://bucket/prefix`` writes run.json and the Hive-partitioned
  unit files there, and nothing locally; pandas/pyarrow read it back in place
  (``open_report``); ``deceval run`` prints its URI and the summary read from there; a second
  driver on the same URI (on this machine) is refused;
- an upload that fails half-way leaves no object under the unit's name, and the rerun redoes
  that unit only;
- a truncated object, one naming another unit, one a row short or one with corrupt pages, put
  there directly, is not trusted: resume moves it aside and redoes it, and skips only the units
  whose files read back whole;
- leaderboard and compare read s3:// reports; the leaderboard is written back to the bucket;
- the key pair never reaches run.json, the printed output or the logs; a URI with credentials
  in it, a missing bucket, half a key pair or an unknown scheme are one-line errors.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import report
from harness.cli import main
from harness.config import resolve_config
from harness.driver import runner
from harness.errors import RunInUseError, UnsafePathError
from harness.report import StorageError, StorePath, locate, open_report, read_run_json, unit_problem
from tests.fakes.reports import GOOD, make_report
from tests.fakes.rows import corrupt_data_pages
from tests.fakes.scripted_runner import use_scripted_runner


def make_cfg(tmp_path: Path, output_dir: str, prompts: int = 6):
    """Two strategies over ``prompts`` prompts in shards of 2: 2 x 3 units."""
    model = tmp_path / "tiny-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 32}))
    path = tmp_path / "qs.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?", "reference": "Paris"}) + "\n"
                            for i in range(prompts)))
    raw = {"run_name": "s3-run", "models": [{"model": str(model), "name": "tiny"}],
           "prompt_sets": [{"path": str(path), "name": "qs"}],
           "strategies": [{"name": "greedy"}, {"name": "top_p", "top_p": 0.9}],
           "generation": {"max_tokens": 4, "seed": 0}, "shard_size": 2, "metrics": ["contains_answer"],
           "output": {"dir": output_dir}}
    return resolve_config(raw, str(tmp_path / "s3-run.yaml"))


def write_config(tmp_path: Path) -> Path:
    """A one-unit config file (the folder is its own tiny "model")."""
    cfg_path = tmp_path / "c.yaml"
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "q0", "prompt": "Q?", "reference": "Paris"}) + "\n")
    cfg_path.write_text(f"run_name: cli\nmodels: [{{model: {tmp_path}, name: tiny}}]\n"
                        f"prompt_sets: [{{path: {tmp_path / 'q.jsonl'}, name: q}}]\nstrategies: [{{name: greedy}}]\n")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 32}))
    return cfg_path


@pytest.fixture()
def scripted(monkeypatch):
    """The runner with a scripted stand-in engine; ``ran`` lists the units it generated."""
    ran: list[str] = []

    def script(unit, prompt):
        if not ran or ran[-1] != unit.id:
            ran.append(unit.id)
        return " Paris"
    use_scripted_runner(monkeypatch, script, completion_tokens=2)
    return ran


def run_quiet(cfg, **kw):
    out = io.StringIO()
    outcome = runner.run(cfg, out=out, progress=False, **kw)
    return outcome, out.getvalue()


def objects(fs, prefix: str) -> list[str]:
    import pyarrow.fs as pafs
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
                  if i.type == pafs.FileType.File)


# ---- a run writes to s3:// and reads back in place ---------------------------------------------


def test_run_writes_its_report_to_s3_and_nothing_locally(tmp_path, s3_bucket, s3_env, scripted, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    cfg = make_cfg(tmp_path, f"{s3_bucket}/nightly/reports")
    outcome, printed = run_quiet(cfg)
    assert outcome.ok and outcome.units_done == 6
    assert isinstance(outcome.run_dir, StorePath) and str(outcome.run_dir) == f"{s3_bucket}/nightly/reports/{cfg.run_id}"

    bucket = s3_bucket.removeprefix("s3://")
    keys = objects(s3_env.filesystem(), bucket)
    prefix = f"{bucket}/nightly/reports/{cfg.run_id}/"
    units = [k for k in keys if k.endswith(".parquet")]
    assert f"{prefix}run.json" in keys and len(units) == 6
    assert all(k.startswith(prefix + "samples/model=tiny/strategy=") for k in units)
    assert len(keys) == 7  # no lock object, no temporary object left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qs.jsonl", "tiny-model"]  # nothing written locally

    rep = open_report(str(outcome.run_dir))
    assert rep.meta["status"] == "complete" and rep.run_id == cfg.run_id
    assert rep.dataset().count_rows() == 12
    df = rep.samples()
    assert len(df) == 12 and set(df["strategy_label"]) == {"greedy", "top_p(top_p=0.9)"} and df["error"].isna().all()
    # every unit file reads back whole, as resume checks it
    for key in units:
        rel = key.removeprefix(prefix + "samples/")
        assert unit_problem(outcome.run_dir, rel, Path(rel).stem, 2) is None

    # the key pair is in no file, no printed line and no log record
    secret = s3_env.secret_key
    run_json = s3_env.filesystem().open_input_stream(f"{prefix}run.json").readall().decode()
    assert secret not in run_json and s3_env.access_key not in run_json
    assert secret not in printed and secret not in caplog.text
    assert all(secret.encode() not in s3_env.filesystem().open_input_stream(k).readall() for k in units)


def test_rerun_from_s3_skips_every_verified_unit(tmp_path, s3_bucket, scripted):
    cfg = make_cfg(tmp_path, f"{s3_bucket}/r")
    first, _ = run_quiet(cfg)
    assert first.ok and len(scripted) == 6
    scripted.clear()
    again, printed = run_quiet(cfg)
    assert again.ok and again.units_skipped == 6 and again.units_done == 0 and scripted == []
    assert "6 already done (each read back whole)" in printed
    # --resume RUN_ID reaches the same prefix
    resumed, _ = run_quiet(cfg, run_id=cfg.run_id)
    assert resumed.units_skipped == 6 and scripted == []


def test_deceval_run_cli_prints_the_report_uri_and_its_summary(tmp_path, s3_bucket, scripted, capsys):
    cfg_path = write_config(tmp_path)
    assert main(["run", str(cfg_path), "--output-dir", f"{s3_bucket}/cli", "--no-progress"]) == 0
    out = capsys.readouterr().out
    (run,) = report.find_reports([f"{s3_bucket}/cli"])
    run_id = open_report(run).run_id
    assert f"report: {s3_bucket}/cli/{run_id}  (1 unit(s) run" in out and "greedy" in out  # the summary, read from s3


def test_a_second_driver_on_the_same_uri_is_refused(tmp_path, s3_bucket, scripted):
    cfg = make_cfg(tmp_path, f"{s3_bucket}/r")
    with report.RunLock(f"{s3_bucket}/r/{cfg.run_id}"):
        with pytest.raises(RunInUseError, match=f"{s3_bucket}/r/{cfg.run_id} is in use by another deceval driver"):
            run_quiet(cfg)
    assert scripted == [] and run_quiet(cfg)[0].ok


# ---- crashes: no partial object is ever trusted --------------------------------------------------


def test_an_upload_that_fails_half_way_leaves_no_object_and_the_rerun_redoes_it(tmp_path, s3_bucket, s3_env,
                                                                                scripted, monkeypatch):
    cfg = make_cfg(tmp_path, f"{s3_bucket}/r")
    real_upload = report.upload_bytes
    calls = {"n": 0}

    def half_then_fail(stream, data):
        """The third unit's upload: half of the file reaches the stream, then the link drops."""
        calls["n"] += 1
        if data[:4] == b"PAR1" and calls["n"] == 3:
            stream.write(data[: len(data) // 2])
            raise OSError("connection reset by peer (simulated)")
        real_upload(stream, data)
    monkeypatch.setattr(report, "upload_bytes", half_then_fail)
    outcome, _ = run_quiet(cfg)
    assert outcome.units_done == 5 and len(outcome.units_failed) == 1
    failed = outcome.units_failed[0]
    assert failed["stage"] == "scoring or writing" and "connection reset" in failed["error"]
    assert read_run_json(outcome.run_dir)["status"] == "failed"

    # no object at all under the failed unit's name: nothing a resume could take for done
    bucket = s3_bucket.removeprefix("s3://")
    keys = objects(s3_env.filesystem(), bucket)
    assert not [k for k in keys if failed["unit_id"] in k]
    assert len([k for k in keys if k.endswith(".parquet")]) == 5

    monkeypatch.setattr(report, "upload_bytes", real_upload)
    scripted.clear()
    again, _ = run_quiet(cfg)
    assert again.ok and again.units_skipped == 5 and scripted == [failed["unit_id"]]
    assert open_report(str(again.run_dir)).dataset().count_rows() == 12


def test_damaged_objects_are_moved_aside_and_redone_and_only_whole_ones_skipped(tmp_path, s3_bucket, s3_env,
                                                                                 scripted):
    """What resume checks before it skips a unit at a URI: footer, unit id, rows, page checksums."""
    cfg = make_cfg(tmp_path, f"{s3_bucket}/r")
    first, _ = run_quiet(cfg)
    fs = s3_env.filesystem()
    bucket = s3_bucket.removeprefix("s3://")
    units = [k for k in objects(fs, bucket) if k.endswith(".parquet")]
    truncated, foreign, short, corrupt = units[0], units[3], units[4], units[5]

    def put(key: str, data: bytes) -> None:
        with fs.open_output_stream(key) as fh:
            fh.write(data)

    def get(key: str) -> bytes:
        return fs.open_input_stream(key).readall()

    # a crashed writer's object: the first half of a real unit file, put there directly
    put(truncated, get(truncated)[: len(get(truncated)) // 2])
    # a whole, valid Parquet file under the name, written for another unit
    buf = pa.BufferOutputStream()
    pq.write_table(pq.read_table(pa.BufferReader(get(units[1]))), buf)
    put(foreign, buf.getvalue().to_pybytes())
    # the right unit's footer, one row short
    buf = pa.BufferOutputStream()
    pq.write_table(pq.read_table(pa.BufferReader(get(short))).slice(0, 1), buf)
    put(short, buf.getvalue().to_pybytes())
    # the right footer over data pages whose checksums no longer match
    local = tmp_path / "corrupt.parquet"
    local.write_bytes(get(corrupt))
    corrupt_data_pages(local)
    put(corrupt, local.read_bytes())

    scripted.clear()
    again, printed = run_quiet(cfg)
    assert again.ok and again.units_skipped == 2 and again.units_done == 4
    assert sorted(scripted) == sorted(Path(k).stem for k in (truncated, foreign, short, corrupt))  # only those ran
    for problem in ("unreadable footer", "footer names unit", "has 1 rows, expected 2", "does not read back"):
        assert problem in printed, problem
    meta = read_run_json(again.run_dir)
    assert meta["status"] == "complete" and len(meta["set_aside"]) == 4
    aside = [k for k in objects(fs, bucket) if "/.corrupt-" in k]
    assert len(aside) == 4  # kept for inspection, out of the dataset
    rep = open_report(str(again.run_dir))
    assert rep.dataset().count_rows() == 12 and rep.samples()["unit_id"].value_counts().max() == 2


# ---- leaderboard and compare read s3:// ----------------------------------------------------------


def test_leaderboard_and_compare_read_reports_at_s3(tmp_path, s3_bucket, s3_env, capsys):
    root = locate(f"{s3_bucket}/reports")
    base = make_report(root, "base", GOOD)
    worse = make_report(root, "worse", {"greedy": (0.5, 1, False), "top_p-0.9": (0.6, 2, False)})
    assert isinstance(base, StorePath)

    assert main(["leaderboard", f"{s3_bucket}/reports", "--no-html", "--n-boot", "200"]) == 0
    out = capsys.readouterr()
    assert "greedy" in out.out and f"{s3_bucket}/reports/base/leaderboard/leaderboard.md" in out.err
    bucket = s3_bucket.removeprefix("s3://")
    keys = objects(s3_env.filesystem(), f"{bucket}/reports/base/leaderboard")
    assert sorted(Path(k).name for k in keys) == ["leaderboard.csv", "leaderboard.md"]
    csv = s3_env.filesystem().open_input_stream(keys[0]).readall().decode()
    assert "top_p-0.9" in csv and "exact_match" in csv

    assert main(["compare", str(base), str(base)]) == 0
    assert "PASS" in capsys.readouterr().out.upper()
    assert main(["compare", str(base), str(worse)]) == 1  # greedy's exact_match regressed
    assert "exact_match" in capsys.readouterr().out


# ---- clear one-line errors; nothing outside the prefix; no secret in a URI -----------------------


@pytest.mark.parametrize("uri, expected", [
    ("s3://AKIDEXAMPLE:s3cr3t-value@bucket/reports", "carries credentials"),
    ("s3://bucket/reports?secret_key=s3cr3t-value", "'secret_key'"),
    ("s3:///reports", "names no bucket"),
    ("s3://bucket/a/../b", "'..'"),
    ("nosuchfs://bucket/reports", "no filesystem for 'nosuchfs://'"),
])
def test_bad_output_uris_are_one_line_errors_naming_the_setting(tmp_path, uri, expected, scripted, capsys):
    cfg_path = write_config(tmp_path)
    assert main(["run", str(cfg_path), "--output-dir", uri, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and err.startswith("error: output.dir"), err
    assert "s3cr3t-value" not in err and "Traceback" not in err
    assert scripted == []


def test_missing_bucket_and_half_a_key_pair_are_one_line_errors(tmp_path, s3_env, scripted, monkeypatch, capsys):
    cfg = make_cfg(tmp_path, "s3://no-such-bucket-here/reports")
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-here' does not exist.*create it first"):
        run_quiet(cfg)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"):
        run_quiet(make_cfg(tmp_path, "s3://any-bucket/reports"))
    assert scripted == []
    assert main(["leaderboard", "s3://no-such-bucket-here/reports"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "AWS_SECRET_ACCESS_KEY" in err


def test_an_unreachable_endpoint_is_a_one_line_error_naming_the_variable(tmp_path, s3_env, scripted, monkeypatch,
                                                                        capsys):
    import socket
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    assert main(["run", str(write_config(tmp_path)), "--output-dir", "s3://bucket/reports", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot reach the bucket of output.dir s3://bucket")
    assert "check AWS_ENDPOINT_URL" in err and s3_env.secret_key not in err and scripted == []


def test_nothing_a_report_names_is_written_outside_the_prefix(s3_bucket):
    root = locate(f"{s3_bucket}/reports/run1")
    assert str(root / "samples" / "model=m/strategy=s/u.parquet") == f"{s3_bucket}/reports/run1/samples/model=m/strategy=s/u.parquet"
    with pytest.raises(UnsafePathError, match="outside"):
        report.write_unit(root, "../../../elsewhere/u.parquet", [], pa.schema([]), {"unit_id": "u"})
    with pytest.raises(UnsafePathError, match="outside"):
        report.run_folder(f"{s3_bucket}/reports", "../escape")
    with pytest.raises(TypeError, match="is a URI, not a local path"):
        Path(root)  # never mistaken for a local folder


def test_any_fsspec_uri_holds_a_report(tmp_path, scripted):
    """A filesystem pyarrow has no URI scheme for (fsspec's memory://) works the same way."""
    cfg = make_cfg(tmp_path, "memory://deceval-test/reports")
    outcome, _ = run_quiet(cfg)
    assert outcome.ok and str(outcome.run_dir) == f"memory://deceval-test/reports/{cfg.run_id}"
    assert len(open_report(f"memory://deceval-test/reports/{cfg.run_id}").samples()) == 12
    scripted.clear()
    assert run_quiet(cfg)[0].units_skipped == 6 and scripted == []


@pytest.mark.parametrize("command, args", [("tune", ["configs/tune-quick.yaml", "--dry-run"]),
                                           ("study", ["configs/study-seed.yaml", "--dry-run"]),
                                           ("probe", ["dependency", "smollm2-135m"])])
def test_tune_study_and_probe_refuse_a_uri_instead_of_writing_a_local_folder_named_s3(command, args, monkeypatch,
                                                                                    capsys):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    assert main([command, *args, "--output-dir", "s3://bucket/tunes"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"deceval {command} writes to a local folder only" in err
    assert not Path("s3:").exists()

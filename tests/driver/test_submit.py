"""``deceval submit``: the job request (ids, working_dir, entrypoint), the handling of a used
submission id and of --wait against a fake job client, and one real job on a local Ray
head (marked engine: it runs the smoke-sized config on the real model)."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.config import load_config
from harness.driver.submit import SubmitError, build_job, submission_id, submit
from tests.fakes.ray_nodes import BlockNodes, free_port

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


# ---- the job request --------------------------------------------------------------------------


def test_submission_id_is_deterministic_and_dated_for_nightlies():
    cfg = load_config(SMOKE)
    sid = submission_id(cfg)
    assert sid == f"deceval-smoke-{cfg.config_hash[:12]}" == submission_id(load_config(SMOKE))
    assert submission_id(cfg, dt.date(2025, 3, 4)) == f"{sid}-20250304"


def test_submission_id_changes_with_the_config(tmp_path):
    other = tmp_path / "c.yaml"
    other.write_text(SMOKE.read_text().replace("max_tokens: 24", "max_tokens: 25"))
    assert submission_id(load_config(other)) != submission_id(load_config(SMOKE))
    # output settings do not change what is computed, so not the id either
    same = tmp_path / "d.yaml"
    same.write_text(SMOKE.read_text() + "output: {dir: elsewhere}\n")
    assert submission_id(load_config(same)) == submission_id(load_config(SMOKE))


def test_build_job_working_dir_excludes_and_entrypoint(monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = build_job(SMOKE, load_config(SMOKE), address="http://127.0.0.1:8265")
    env = spec.runtime_env
    assert env["working_dir"] == str(ROOT)
    assert {".venv", "reports", ".git"} <= set(env["excludes"])
    assert spec.entrypoint.startswith("python -m harness.cli run configs/smoke.yaml --address auto")
    assert f"--output-dir {ROOT / 'reports'}" in spec.entrypoint  # local head: this machine's folder
    # ray.init in the job sets these two; a job env var of the same name would conflict
    assert not {"VLLM_LOGGING_LEVEL", "TOKENIZERS_PARALLELISM"} & set(env["env_vars"])
    assert spec.metadata["deceval_run_id"] == load_config(SMOKE).run_id


def test_remote_head_reports_go_to_the_heads_home(monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = build_job(SMOKE, load_config(SMOKE), address="http://10.1.2.3:8265", nightly=dt.date(2025, 1, 2))
    assert spec.entrypoint.endswith("--output-dir ~/deceval/reports")
    assert spec.submission_id.endswith("-20250102")


def test_config_outside_the_working_dir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    outside = tmp_path / "c.yaml"
    shutil.copy(SMOKE, outside)
    with pytest.raises(SubmitError, match="outside the working dir"):
        build_job(outside, load_config(outside), address="http://127.0.0.1:8265")


def test_cli_dry_run_prints_the_request(monkeypatch, capsys):
    from harness.cli import main
    monkeypatch.chdir(ROOT)
    assert main(["submit", "configs/smoke.yaml", "--dry-run", "--nightly"]) == 0
    out = capsys.readouterr().out
    assert f"-{dt.date.today():%Y%m%d}" in out and '"working_dir"' in out


#: Files a project folder may hold that must never reach the cluster, one per excluded pattern.
SECRETS = [".env", ".env.local", "configs/.envrc", ".ray/auth_token", "id_rsa", "id_ed25519.pub",
           ".ssh/id_ecdsa", "certs/server.pem", "tls.key", "harness/deploy.key", ".aws/credentials",
           ".netrc", ".git/config", ".venv/bin/python", "reports/r/run.json"]


def test_working_dir_package_ships_no_secrets(tmp_path, monkeypatch):
    """The zip Ray's job client would upload, built by Ray's own packaging (the same calls as
    JobSubmissionClient._upload_working_dir_if_needed), with Ray's default excludes and
    .gitignore off: deceval's own list must keep every secret out."""
    from zipfile import ZipFile

    from ray._private.runtime_env.packaging import create_package
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    project = tmp_path / "project"
    for rel in ["harness/__init__.py", "harness/keys.py", "configs/smoke.yaml", *SECRETS]:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("TOKEN=do-not-ship\n")
    shutil.copy(SMOKE, project / "configs" / "smoke.yaml")
    cfg_path = project / "configs" / "smoke.yaml"
    spec = build_job(cfg_path, load_config(cfg_path), address="http://10.0.0.1:8265", working_dir=project)

    zip_path = tmp_path / "package.zip"

    def package(working_dir, excludes, is_file=False):
        assert not is_file
        create_package(working_dir, zip_path, include_gitignore=False, excludes=excludes)

    monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")  # Ray's own defaults off
    upload_working_dir_if_needed(dict(spec.runtime_env), include_gitignore=False, upload_fn=package)
    names = set(ZipFile(zip_path).namelist())
    assert {"harness/__init__.py", "harness/keys.py", "configs/smoke.yaml"} <= names  # the project is there
    assert not names & set(SECRETS), sorted(names & set(SECRETS))
    folders = {".ray", ".ssh", ".aws", ".git", ".venv", "reports"}
    assert not [n for n in names if folders & set(n.split("/"))]  # not even an empty folder


def test_dry_run_masks_every_env_value(monkeypatch, capsys):
    import json

    from harness.cli import main
    monkeypatch.chdir(ROOT)
    secret = "hf_s3cr3t-VALUE-0042"
    assert main(["submit", "configs/smoke.yaml", "--dry-run", "--env", f"HF_TOKEN={secret}",
                 "--env", "WANDB_API_KEY=k-" + secret]) == 0
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    request = json.loads(captured.out)
    # the keys stay (and the job's own PYTHONUNBUFFERED is masked too); the values never show
    assert request["runtime_env"]["env_vars"] == {"PYTHONUNBUFFERED": "***", "HF_TOKEN": "***", "WANDB_API_KEY": "***"}
    assert request["entrypoint"].startswith("python -m harness.cli run configs/smoke.yaml")


def test_a_malformed_env_argument_is_not_echoed(monkeypatch, capsys):
    from harness.cli import main
    monkeypatch.chdir(ROOT)
    secret = "hf_s3cr3t-VALUE-0042"
    assert main(["submit", "configs/smoke.yaml", "--dry-run", "--env", "A=1", "--env", secret]) == 2
    err = capsys.readouterr().err
    assert "--env argument #2 has no '='" in err and "KEY=VALUE" in err and secret not in err
    assert main(["submit", "configs/smoke.yaml", "--dry-run", "--env", f"1BAD={secret}"]) == 2
    err = capsys.readouterr().err
    assert "'1BAD' is not an environment variable name" in err and secret not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_help_lists_submit():
    from harness.cli import build_parser
    help_text = build_parser().format_help()
    assert "submit" in help_text


# ---- submit / --wait against a fake job server ------------------------------------------------


class FakeClient:
    def __init__(self, statuses=("PENDING", "RUNNING", "SUCCEEDED"), exit_code=0):
        self.jobs: dict[str, list[str]] = {}
        self.submitted: list[dict] = []
        self.statuses = list(statuses)
        self.exit_code = exit_code

    def get_job_info(self, sid):
        if sid not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {sid} does not exist.")
        states = self.jobs[sid]
        status = states.pop(0) if len(states) > 1 else states[0]
        return SimpleNamespace(status=status, message="m",
                               driver_exit_code=self.exit_code if status in ("SUCCEEDED", "FAILED") else None)

    def submit_job(self, **kw):
        if kw["submission_id"] in self.jobs:
            raise RuntimeError("Request failed with status code 500: Job with submission_id already exists")
        self.submitted.append(kw)
        self.jobs[kw["submission_id"]] = list(self.statuses)
        return kw["submission_id"]

    async def tail_job_logs(self, sid):
        for line in ("run smoke: 3 units\n", "report: ...\n"):
            yield line


@pytest.fixture()
def spec(monkeypatch):
    monkeypatch.chdir(ROOT)
    return build_job(SMOKE, load_config(SMOKE), address="http://127.0.0.1:8265")


def test_submit_then_resubmit_is_not_sent_twice(spec):
    client, out = FakeClient(statuses=("SUCCEEDED",)), io.StringIO()
    assert submit(spec, client, out=out) == 0
    assert len(client.submitted) == 1 and "submitted job" in out.getvalue()
    out = io.StringIO()
    assert submit(spec, client, out=out) == 0
    assert len(client.submitted) == 1
    assert "already submitted (status SUCCEEDED)" in out.getvalue()


def test_resubmit_of_a_failed_job_says_force_new(spec):
    client = FakeClient(statuses=("FAILED",), exit_code=1)
    submit(spec, client, out=io.StringIO())
    out = io.StringIO()
    assert submit(spec, client, out=out) == 1
    assert "--force-new" in out.getvalue()
    sid = spec.submission_id
    assert submit(spec, client, force_new=True, out=io.StringIO()) == 0
    assert len(client.submitted) == 2 and client.submitted[1]["submission_id"].startswith(sid + "-")


def test_wait_streams_logs_and_returns_the_exit_status(spec):
    out = io.StringIO()
    assert submit(spec, FakeClient(), wait=True, out=out, poll_s=0) == 0
    assert "run smoke: 3 units" in out.getvalue() and "SUCCEEDED" in out.getvalue()
    spec.submission_id = "other"
    assert submit(spec, FakeClient(statuses=("RUNNING", "FAILED"), exit_code=1), wait=True,
                  out=io.StringIO(), poll_s=0) == 1


def test_cannot_reach_the_server_is_a_clear_error(monkeypatch, capsys):
    from harness.cli import main
    monkeypatch.chdir(ROOT)
    port = free_port()
    assert main(["submit", "configs/smoke.yaml", "--address", f"http://127.0.0.1:{port}"]) == 2
    assert "cannot reach the Ray job server" in capsys.readouterr().err


# ---- a real job on a real local head ----------------------------------------------------------


@pytest.fixture()
def local_head(tmp_path):
    """A head with token auth and two CPUs, ``ray start --block`` on loopback (:class:`BlockNodes`)."""
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, RAY_AUTH_MODE="token", PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    nodes = BlockNodes(tmp_path, env)
    try:
        nodes.wait_for_job_server(nodes.start("head", nodes.head_flags(num_cpus=2)))
        yield SimpleNamespace(address=nodes.address, env=env, temp_dir=Path(nodes.temp_dir))  # its session logs
    finally:
        nodes.stop()


@pytest.mark.engine
def test_real_job_on_a_local_head_completes_and_writes_its_report(local_head, tmp_path):
    cfg_path = ROOT / "configs" / f".test_submit_{os.getpid()}.yaml"
    cfg_path.write_text(SMOKE.read_text().replace("prompt_sets: [tiny]", "prompt_sets: [{name: tiny, limit: 3}]")
                        .replace("max_tokens: 24", "max_tokens: 8")
                        + "engine: {engine_core_process: false}\n")  # one process start fewer
    out_dir = tmp_path / "reports"
    try:
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "submit", str(cfg_path.relative_to(ROOT)),
                               "--address", local_head.address, "--wait", "--output-dir", str(out_dir)],
                              cwd=ROOT, env=local_head.env, capture_output=True, text=True, timeout=480)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "SUCCEEDED" in proc.stdout
        cfg = load_config(cfg_path)
        from harness.report import read_run_json, read_samples
        run_dir = out_dir / cfg.run_id
        assert read_run_json(run_dir)["status"] == "complete"
        df = read_samples(run_dir)
        assert len(df) == 3 * 3 and df["error"].isna().all()
        # the same id again: not sent twice, and it says so
        again = subprocess.run([sys.executable, "-m", "harness.cli", "submit", str(cfg_path.relative_to(ROOT)),
                                "--address", local_head.address, "--output-dir", str(out_dir)],
                               cwd=ROOT, env=local_head.env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "already submitted (status SUCCEEDED)" in again.stdout
    finally:
        cfg_path.unlink(missing_ok=True)


class AgentNotUpClient(FakeClient):
    """A head that has just started: its job agent refuses the first ``refusals`` submissions."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def submit_job(self, **kw):
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("Request failed with status code 500: No available agent to submit job, "
                               "please try again later..")
        return super().submit_job(**kw)


def test_submit_waits_for_a_just_started_heads_job_agent(spec):
    client = AgentNotUpClient(refusals=2)
    out = io.StringIO()
    assert submit(spec, client, out=out, poll_s=0) == 0
    assert len(client.submitted) == 1 and "submitted job" in out.getvalue()


def test_submit_gives_up_on_a_job_agent_that_never_comes_up(spec):
    ticks = iter(range(0, 10_000, 30))  # each clock reading 30 s later: past the 60 s wait at once
    with pytest.raises(SubmitError, match="No available agent"):
        submit(spec, AgentNotUpClient(refusals=10**6), out=io.StringIO(), poll_s=0, clock=lambda: next(ticks))

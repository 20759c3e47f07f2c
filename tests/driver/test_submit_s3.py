"""``deceval submit`` with the report at s3://: the job request carries the storage's
endpoint and region but never a credential; ``--wait`` says how the job ended and where
its report is; and one real job (SmolLM2 on a local Ray head with token auth) writes its
report to a real S3 server (moto, ``s3_server`` in tests/conftest.py), read back from
there, with the secret key in no log, job request or file of the cluster."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import load_config
from harness.driver.submit import SubmitError, build_job, submit
from tests.driver.test_submit import SMOKE, FakeClient, local_head  # noqa: F401 - local_head is a fixture

ROOT = Path(__file__).resolve().parents[2]


def test_the_job_gets_the_endpoint_and_region_never_the_credentials(s3_env, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = build_job(SMOKE, load_config(SMOKE), address="http://10.0.0.1:8265", output_dir="s3://results/nightly")
    env = spec.runtime_env["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == s3_env.endpoint and env["AWS_DEFAULT_REGION"] == s3_env.region
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(env)
    request = json.dumps(spec.submit_kwargs())
    assert s3_env.secret_key not in request and s3_env.access_key not in request
    assert spec.entrypoint.endswith("--output-dir s3://results/nightly")
    assert spec.metadata["deceval_output_dir"] == "s3://results/nightly"
    # a config whose output.dir is a URI keeps it as is for a remote head
    cfg = load_config(SMOKE)
    from dataclasses import replace
    spec = build_job(SMOKE, replace(cfg, output_dir="s3://results/cfg"), address="http://10.0.0.1:8265")
    assert spec.output_dir == "s3://results/cfg"


def test_credentials_are_refused_in_env_and_in_the_uri(s3_env, monkeypatch, capsys):
    from harness.cli import main
    monkeypatch.chdir(ROOT)
    secret = s3_env.secret_key
    assert main(["submit", "configs/smoke.yaml", "--dry-run", "--output-dir", "s3://results/r",
                 "--env", f"AWS_SECRET_ACCESS_KEY={secret}"]) == 2
    err = capsys.readouterr().err
    assert "--env AWS_SECRET_ACCESS_KEY: credentials are not sent with a job" in err and secret not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["submit", "configs/smoke.yaml", "--dry-run", "--output-dir", f"s3://key:{secret}@results/r"]) == 2
    err = capsys.readouterr().err
    assert "carries credentials" in err and secret not in err


def test_wait_reports_the_status_and_where_the_report_is(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(SMOKE)
    spec = build_job(SMOKE, cfg, address="http://127.0.0.1:8265", output_dir="s3://results/nightly?region=eu-west-1")
    out = io.StringIO()
    assert submit(spec, FakeClient(), wait=True, out=out, poll_s=0) == 0
    text = out.getvalue()
    assert "SUCCEEDED" in text and f"report: s3://results/nightly/{cfg.run_id}\n" in text
    spec.submission_id = "other"
    out = io.StringIO()
    assert submit(spec, FakeClient(statuses=("RUNNING", "FAILED"), exit_code=1), wait=True, out=out, poll_s=0) == 1
    assert "FAILED" in out.getvalue() and "(partial or absent: the job did not succeed)" in out.getvalue()


# ---- one real job, its report in a real S3 server ---------------------------------------------


@pytest.fixture()
def head_with_s3_credentials(s3_server, monkeypatch, request):
    """A local Ray head whose nodes hold the S3 key pair in their environment (as a cluster's
    nodes hold theirs) but not the endpoint: that reaches the job only through the job request."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3_server.env.items():
        if key not in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"):
            monkeypatch.setenv(key, value)
    head = request.getfixturevalue("local_head")
    for key in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, s3_server.env[key])
    return head


@pytest.mark.engine
def test_real_job_writes_its_report_to_s3(head_with_s3_credentials, s3_server, tmp_path):
    started = time.time()
    head = head_with_s3_credentials
    bucket = s3_server.create_bucket()
    cfg_path = ROOT / "configs" / f".test_submit_s3_{os.getpid()}.yaml"
    cfg_path.write_text(SMOKE.read_text().replace("prompt_sets: [tiny]", "prompt_sets: [{name: tiny, limit: 3}]")
                        .replace("max_tokens: 24", "max_tokens: 8")
                        + "engine: {engine_core_process: false}\n")  # one process start fewer
    env = dict(head.env, AWS_ENDPOINT_URL=s3_server.endpoint, AWS_DEFAULT_REGION=s3_server.region)
    # a harmless value sent the way credentials must not be: the scan below must find it
    canary = f"deceval-canary-{os.getpid()}-{time.time_ns()}"
    try:
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "submit", str(cfg_path.relative_to(ROOT)),
                               "--address", head.address, "--wait", "--output-dir", f"{bucket}/reports",
                               "--env", f"DECEVAL_CANARY={canary}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
        cfg = load_config(cfg_path)
    finally:
        cfg_path.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    uri = f"{bucket}/reports/{cfg.run_id}"
    assert "SUCCEEDED" in proc.stdout and f"report: {uri}\n" in proc.stdout

    from harness.report import open_report
    rep = open_report(uri)  # straight from the bucket, nothing copied
    assert rep.meta["status"] == "complete"
    df = rep.samples()
    assert len(df) == 3 * 3 and df["error"].isna().all() and (df["completion_tokens"] > 0).all()
    assert not (tmp_path / "reports").exists() and not (ROOT / "s3:").exists()

    # the secret key: not in what submit printed, not in run.json, not in any file the cluster
    # wrote since the test began (its logs, the job's runtime_env records, the unpacked package)
    secret = s3_server.secret_key.encode()
    assert secret not in (proc.stdout + proc.stderr).encode()
    assert secret not in json.dumps(rep.meta).encode()
    leaked, canary_seen = [], []
    # the head's own Ray temp folder (its sessions, logs, unpacked packages), and the shared one
    for path in [p for root in (head.temp_dir, Path("/tmp/ray")) for p in root.glob("session_*/**/*")]:
        try:
            if path.is_file() and path.stat().st_mtime >= started:
                data = path.read_bytes()
                leaked += [str(path)] if secret in data else []
                canary_seen += [path.name] if canary.encode() in data else []
        except OSError:
            continue
    assert not leaked, leaked
    # Ray does write a job's env var values into its logs: why credentials never go that way
    assert "runtime_env_agent.log" in canary_seen, canary_seen

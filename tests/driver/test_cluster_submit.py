"""``deceval submit`` to a local cluster of several nodes, the report in object storage.

Three ``ray start`` processes on loopback, as a user starts them (docs/cluster.md): a head
with no CPUs for engines (job server, token auth: Ray 2.60's job server wants one) and two
1-CPU worker nodes. The job's driver runs on the head, its two engine replicas on the
workers, and the report goes to a real S3 server (moto, the ``s3_server`` fixture); the
nodes hold the key pair, the job request carries only the endpoint and region. ``--wait``
reports the job's status and where its report is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.fakes.ray_nodes import BlockNodes

# The workers start one at a time and the job only once both are up (BlockNodes.start_worker):
# started together on a loaded machine, a worker's raylet could time out registering, and a job
# that started first saw one worker and waited on a replica no node could take.
pytestmark = [pytest.mark.cluster, pytest.mark.engine, pytest.mark.cluster_jobs]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def token_cluster(tmp_path, s3_server):
    """Head (num-cpus 0) + two 1-CPU workers, each a ``ray start --block`` process with ports
    of its own (:class:`BlockNodes`)."""
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(RAY_AUTH_MODE="token", PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}")
    # the nodes hold the credentials (as a cluster's nodes hold their own), not the endpoint
    env.update({k: v for k, v in s3_server.env.items() if k not in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                                                                      "AWS_REGION")})
    nodes = BlockNodes(tmp_path, env)
    try:
        nodes.wait_for_job_server(nodes.start("head", nodes.head_flags(num_cpus=0)))
        for i in range(2):
            nodes.start_worker(f"worker{i}", num_cpus=1)
        yield SimpleNamespace(address=nodes.address, env=env, gcs=nodes.gcs)
    finally:
        nodes.stop()


def test_submit_to_a_multi_node_cluster_writes_the_report_to_s3(s3_env, token_cluster, s3_server):
    """``s3_env``: this process reads the report back from the server; the nodes got only the
    key pair (``token_cluster``), the job the endpoint and region (``deceval submit``)."""
    bucket = s3_server.create_bucket()
    cfg_path = ROOT / "configs" / f".test_cluster_submit_{os.getpid()}.yaml"
    cfg_path.write_text("run_name: cluster-submit\nmodels: [{model: smollm2-135m, replicas: 2}]\n"
                        "prompt_sets: [{name: tiny, limit: 4}]\nchat: true\n"
                        "strategies: [{name: greedy}, {name: top_p, top_p: 0.9}]\n"
                        "generation: {max_tokens: 8, seed: 0}\nshard_size: 2\n"
                        "engine: {engine_core_process: false, max_model_len: 512, kv_cache_gib: 1}\n")
    env = dict(token_cluster.env, AWS_ENDPOINT_URL=s3_server.endpoint, AWS_DEFAULT_REGION=s3_server.region)
    from harness.config import load_config
    try:
        cfg = load_config(cfg_path)
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "submit", str(cfg_path.relative_to(ROOT)),
                               "--address", token_cluster.address, "--wait", "--output-dir", f"{bucket}/reports"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    finally:
        cfg_path.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    uri = f"{bucket}/reports/{cfg.run_id}"
    assert "SUCCEEDED" in proc.stdout and f"report: {uri}\n" in proc.stdout  # the status and where the rows are

    from harness.report import open_report
    rep = open_report(uri)  # read in place, from the bucket
    df = rep.samples()
    assert rep.meta["status"] == "complete" and len(df) == 4 * 2 and df["error"].isna().all()
    nodes = rep.meta["cluster"]["nodes"]
    workers = {n for n, info in nodes.items() if info["resources"].get("CPU")}
    head = set(nodes) - workers
    assert len(workers) == 2 and len(head) == 1
    assert set(df["node_id"]) == set(rep.meta["unit_nodes"].values()) == workers  # both workers, never the head
    assert s3_server.secret_key not in proc.stdout + proc.stderr

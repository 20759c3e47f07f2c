"""cluster.yaml: valid for Ray's cluster launcher (its JSON schema, shipped with the installed
ray, and Ray's own config check), with GPU workers that install the gpu extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")
ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    import ray.autoscaler
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_valid_against_rays_schema(cluster, schema):
    jsonschema.validate(cluster, schema)


def test_valid_for_rays_own_check(cluster):
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config
    validate_config(prepare_config(copy.deepcopy(cluster)))  # defaults filled, then node types checked


def test_schema_catches_a_broken_file(cluster, schema):
    broken = dict(cluster, available_node_types={"gpu": {"resources": {"GPU": 1}}})  # no node_config
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_gpu_workers_and_a_gpu_free_head(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = [t for name, t in types.items() if name != cluster["head_node_type"] and t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["max_workers"] >= 1 for t in gpu_types)
    assert sum(t["max_workers"] for t in gpu_types) <= cluster["max_workers"]


def test_setup_installs_the_gpu_extra_and_excludes_local_state(cluster):
    setup = " ".join(cluster["setup_commands"])
    assert "[gpu" in setup and "pip install" in setup
    from harness import __name__ as _  # noqa: F401 - the project is importable
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "gpu = [" in pyproject  # the extra the setup installs exists
    assert {".venv", "reports", ".git"} <= set(cluster["rsync_exclude"])
    starts = " ".join(cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2  # the job server needs the token (see ENVIRONMENT.md)


def test_dashboard_and_job_server_listen_on_the_heads_loopback_only(cluster):
    """A job server runs whatever it is sent: it binds 127.0.0.1 and is reached through
    `ray dashboard cluster.yaml` or an ssh tunnel, as the file's comment says."""
    import shlex
    head = " ".join(cluster["head_start_ray_commands"])
    args = shlex.split(head.replace(";", " ; "))
    hosts = [a.split("=", 1)[1] if "=" in a else args[i + 1] for i, a in enumerate(args)
             if a.split("=", 1)[0] == "--dashboard-host"]
    assert hosts == ["127.0.0.1"], head
    assert "--dashboard-host" not in " ".join(cluster["worker_start_ray_commands"])
    text = (ROOT / "cluster.yaml").read_text()
    assert "ray dashboard cluster.yaml" in text and "ssh" in text and "-L 8265:127.0.0.1:8265" in text


def test_secrets_are_not_rsynced_to_the_nodes(cluster):
    from harness.driver.submit import SECRET_EXCLUDES
    assert set(SECRET_EXCLUDES) <= set(cluster["rsync_exclude"])

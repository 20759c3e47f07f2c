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
    assert "--dashboard-host=0.0.0.0" in starts

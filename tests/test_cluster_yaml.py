"""cluster.yaml is a real Ray cluster-launcher config: it validates against the schema Ray ships."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

from tests.conftest import REPO


def test_cluster_yaml_matches_rays_schema():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    assert any("p5" in n["node_config"]["InstanceType"] for n in nodes.values()), "a GPU worker type"
    assert sum(n.get("max_workers", 0) for n in nodes.values()) <= config["max_workers"] + 4


def test_cluster_yaml_passes_rays_own_validation():
    """Ray's launcher also fills defaults and checks node types; run its validator, not just the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load((REPO / "cluster.yaml").read_text())))


def test_dashboard_and_job_server_listen_on_loopback_only():
    """The dashboard is Ray's job server: anyone reaching it runs code. cluster.yaml keeps it on the head's loopback
    (users reach it with `ray dashboard cluster.yaml`), and no start command binds anything to all interfaces."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    (head,) = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    assert "--dashboard-host=127.0.0.1" in head
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert not any("0.0.0.0" in c for c in commands)

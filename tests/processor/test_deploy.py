"""The shipped scale-out fragment routes by trace id to several replicas and wires every pipeline it names."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.stack.stackfiles import with_env_defaults

FRAGMENT = Path(__file__).resolve().parents[2] / "collector_processor" / "deploy" / "otel-collector.loadbalancing.yaml"


def test_loadbalancing_fragment_routes_by_trace_id_to_several_replicas():
    config = yaml.safe_load(with_env_defaults(FRAGMENT.read_text()))

    (balancer_name,) = [name for name in config["exporters"] if name.split("/")[0] == "load_balancing"]
    balancer = config["exporters"][balancer_name]
    assert balancer["routing_key"] == "traceID"
    assert "otlp" in balancer["protocol"]
    replicas = balancer["resolver"]["static"]["hostnames"]
    assert len(replicas) >= 2 and len(set(replicas)) == len(replicas)
    assert all(host.endswith(":14317") for host in replicas)
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(config[kind])
    used_exporters = {e for p in config["service"]["pipelines"].values() for e in p["exporters"]}
    assert balancer_name in used_exporters

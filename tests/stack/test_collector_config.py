"""otel-collector.yaml structurally: pipelines name defined components, and addresses match the compose file."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.stack.stackfiles import (
    COLLECTOR_FILE,
    COLLECTOR_SERVICE,
    COMPOSE_FILE,
    PROCESSOR_SERVICE,
    collector_config,
    host_port,
    option,
)

SECTIONS = {"receivers": "receivers", "processors": "processors", "exporters": "exporters"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return collector_config()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_pipelines_name_only_defined_components(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces/in", "traces/stitched"}
    used: dict[str, set[str]] = {section: set() for section in SECTIONS}
    for name, pipeline in pipelines.items():
        for section in SECTIONS:
            for component in pipeline.get(section, []):
                assert component in config[section], f"{name} names undefined {section[:-1]} {component}"
                used[section].add(component)
    for section in SECTIONS:
        assert used[section] == set(config[section]), f"defined but unused {section}"
    for extension in config["service"]["extensions"]:
        assert extension in config["extensions"]


def test_memory_limiter_comes_first(config: dict[str, Any]) -> None:
    for name, pipeline in config["service"]["pipelines"].items():
        assert pipeline["processors"][0] == "memory_limiter", name


def test_the_processor_hop_matches_the_compose_file(config: dict[str, Any], compose: dict[str, Any]) -> None:
    command = compose["services"][PROCESSOR_SERVICE]["command"]
    host, port = host_port(config["exporters"]["otlp_grpc/jobtrail"]["endpoint"])
    assert host == PROCESSOR_SERVICE
    assert port == host_port(option(command, "--listen-grpc")[0])[1]
    assert config["service"]["pipelines"]["traces/in"]["exporters"] == ["otlp_grpc/jobtrail"]


def test_stitched_traces_come_back_on_their_own_receiver_and_go_to_jaeger(
    config: dict[str, Any], compose: dict[str, Any]
) -> None:
    command = compose["services"][PROCESSOR_SERVICE]["command"]
    grpc_targets = [url for url in option(command, "--export-to") if url.startswith("grpc://")]
    assert len(grpc_targets) == 1
    host, port = host_port(grpc_targets[0])
    assert host == COLLECTOR_SERVICE
    receivers_on_port = [
        name
        for name, receiver in config["receivers"].items()
        for protocol in receiver["protocols"].values()
        if host_port(protocol["endpoint"])[1] == port
    ]
    stitched = config["service"]["pipelines"]["traces/stitched"]
    assert receivers_on_port == stitched["receivers"], "the processor's output must not loop back into traces/in"
    assert stitched["exporters"] == ["otlp_grpc/jaeger"]
    jaeger_host, jaeger_port = host_port(config["exporters"]["otlp_grpc/jaeger"]["endpoint"])
    assert jaeger_host in compose["services"] and jaeger_port == 4317


def test_cors_allows_the_demo_origin(config: dict[str, Any], compose: dict[str, Any]) -> None:
    published = compose["services"]["api"]["ports"][0].rsplit(":", 1)[1]
    origins = config["receivers"]["otlp"]["protocols"]["http"]["cors"]["allowed_origins"]
    assert f"http://localhost:{published}" in origins and f"http://127.0.0.1:{published}" in origins


def test_the_commented_loadbalancing_variant_is_valid_and_routes_by_trace(
    config: dict[str, Any], compose: dict[str, Any]
) -> None:
    text = COLLECTOR_FILE.read_text()
    block = re.search(r"^  # load_balancing/jobtrail:\n((?:  #   .*\n)+)", text, re.MULTILINE)
    assert block, "the load_balancing variant is missing from otel-collector.yaml"
    uncommented = yaml.safe_load(re.sub(r"^  #   ", "", block.group(1), flags=re.MULTILINE))
    assert uncommented["routing_key"] == "traceID"
    dns = uncommented["resolver"]["dns"]
    command = compose["services"][PROCESSOR_SERVICE]["command"]
    assert dns["hostname"] == PROCESSOR_SERVICE
    assert dns["port"] == str(host_port(option(command, "--listen-grpc")[0])[1]), "the resolver reads a string"

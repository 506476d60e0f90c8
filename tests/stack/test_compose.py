"""docker-compose.yml through the real Compose v1 parser, and every name it uses checked against the repo."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jobtrail.demo.__main__ import build_parser as demo_parser
from jobtrail.demo.settings import API_SERVICE, WORKER_SERVICE
from jobtrail.processor.__main__ import build_parser as processor_parser
from jobtrail.processor.config import load_config
from jobtrail.trail.sources import JAEGER_VERSION

from tests.stack.stackfiles import (
    BUILDER_MANIFEST,
    COLLECTOR_SERVICE,
    COMPOSE_FILE,
    DOCKERFILE,
    PROCESSOR_SERVICE,
    REPO,
    collector_config,
    collector_listen_ports,
    console_scripts,
    host_port,
    option,
    port_mapping,
    run_compose,
    volume_source,
)

REDIS_PORT = 6379


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as the parser resolves it (anchors merged, paths absolute)."""
    result = run_compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_real_parser_accepts_the_file() -> None:
    result = run_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_parser_rejects_a_broken_copy(tmp_path: Path) -> None:
    """The validation has teeth: a dependency on a service that does not exist is refused."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    document["services"]["worker"]["depends_on"]["no-such-service"] = {"condition": "service_started"}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(document))
    result = run_compose("config", "-q", compose_file=broken)
    assert result.returncode != 0
    assert "no-such-service" in result.stderr


def test_build_contexts_and_mounted_files_exist(resolved: dict[str, Any]) -> None:
    built = [name for name, service in resolved["services"].items() if "build" in service]
    assert set(built) == {PROCESSOR_SERVICE, "api", "worker"}
    for name in built:
        context = Path(resolved["services"][name]["build"]["context"])
        assert context == REPO and (context / "Dockerfile").is_file(), name
    mounts = 0
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            source = volume_source(volume)
            if source.startswith("/"):
                assert Path(source).is_file() and REPO in Path(source).parents, f"{name}: {source}"
                mounts += 1
            else:
                assert source in resolved["volumes"], f"{name}: {volume}"
    assert mounts == 1


def test_images_are_pinned(resolved: dict[str, Any]) -> None:
    images = {name: service["image"] for name, service in resolved["services"].items() if "image" in service}
    assert set(images) == {"redis", "jaeger", COLLECTOR_SERVICE}
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert repository and re.fullmatch(r"\d+\.\d+\.\d+(-[a-z]+)?", tag), f"{name}: {image} is not pinned"
    assert images["jaeger"] == f"jaegertracing/jaeger:{JAEGER_VERSION}", "the Jaeger the trail view is written against"
    assert images[COLLECTOR_SERVICE] == f"otel/opentelemetry-collector-contrib:{built_collector_release()}"


def built_collector_release() -> str:
    """The contrib release every component in the builder manifest (what the stack tests run) comes from."""
    manifest = yaml.safe_load(BUILDER_MANIFEST.read_text())
    versions = {
        entry["gomod"].split()[1]
        for section in ("receivers", "processors", "exporters", "extensions")
        for entry in manifest[section]
    }
    assert len(versions) == 1, f"one collector release, not {versions}"
    return versions.pop().removeprefix("v")


def test_the_compose_jaeger_is_the_one_the_stack_tests_build() -> None:
    tool_module = (BUILDER_MANIFEST.parent / "jaeger" / "go.mod").read_text()
    assert f"is Jaeger v{JAEGER_VERSION}" in tool_module
    assert re.search(r"^\tgithub.com/jaegertracing/jaeger v1\.76\.0\b", tool_module, re.MULTILINE)


def test_commands_are_installed_scripts_with_arguments_they_accept(resolved: dict[str, Any]) -> None:
    scripts = console_scripts()
    services = resolved["services"]
    for name in (PROCESSOR_SERVICE, "api", "worker"):
        assert services[name]["command"][0] in scripts, name
    processor = services[PROCESSOR_SERVICE]["command"]
    args = processor_parser().parse_args(processor[1:])
    config = load_config(
        overrides={"grpc_listen": args.listen_grpc, "http_listen": args.listen_http, "export_to": args.export_to}
    )
    assert host_port(config.grpc_listen)[0] == "0.0.0.0", "inside its container the processor must listen on all"
    assert demo_parser().parse_args(services["api"]["command"][1:]).command == "api"
    assert demo_parser().parse_args(services["worker"]["command"][1:]).command == "worker"
    assert services["api"]["environment"]["OTEL_SERVICE_NAME"] == API_SERVICE
    assert services["worker"]["environment"]["OTEL_SERVICE_NAME"] == WORKER_SERVICE


def test_published_ports_are_ports_the_services_listen_on(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    api_args = demo_parser().parse_args(services["api"]["command"][1:])
    assert [port_mapping(port)[2] for port in services["api"]["ports"]] == [api_args.api_port]
    collector_ports = {port_mapping(port)[2] for port in services[COLLECTOR_SERVICE]["ports"]}
    assert collector_ports == {4317, 4318} and collector_ports <= collector_listen_ports(collector_config())
    for service in services.values():
        for port in service.get("ports", []):
            assert port_mapping(port)[0] == "127.0.0.1", f"{port} is published beyond this machine"


def test_service_urls_point_at_services_on_ports_they_listen_on(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    listening = {
        "redis": {REDIS_PORT},
        COLLECTOR_SERVICE: collector_listen_ports(collector_config()),
        PROCESSOR_SERVICE: {
            host_port(address)[1]
            for flag in ("--listen-grpc", "--listen-http")
            for address in option(services[PROCESSOR_SERVICE]["command"], flag)
        },
    }
    urls = [
        (name, value)
        for name in ("api", "worker")
        for key, value in services[name]["environment"].items()
        if key in ("REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "JOBTRAIL_SPAN_INTAKE_FORWARD_TO")
    ]
    urls += [(PROCESSOR_SERVICE, url) for url in option(services[PROCESSOR_SERVICE]["command"], "--export-to")]
    checked = 0
    for name, url in urls:
        if url.startswith("file://"):
            continue
        host, port = host_port(url)
        assert host in services and port in listening[host], f"{name}: {url}"
        checked += 1
    assert checked == 7


def test_health_checks_probe_the_ports_the_services_listen_on(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    probed = {name for name, service in services.items() if "healthcheck" in service}
    # The collector image is built FROM scratch (nothing to run a probe with); the worker serves no port.
    assert probed == {"redis", "jaeger", PROCESSOR_SERVICE, "api"}
    processor_http = option(services[PROCESSOR_SERVICE]["command"], "--listen-http")[0]
    assert f":{host_port(processor_http)[1]}/healthz" in " ".join(services[PROCESSOR_SERVICE]["healthcheck"]["test"])
    assert ":8000/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in (COLLECTOR_SERVICE, "api", "worker"):
        dependencies = services[name]["depends_on"]
        assert all(dependency in services for dependency in dependencies), name


def test_dockerfile_copies_paths_that_exist() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ") and "--from=" not in line]
    sources = [source for sources in copies for source in sources]
    assert {"pyproject.toml", "instrumentation", "collector_processor", "demo_app"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
    assert "node_modules" in (REPO / ".dockerignore").read_text()

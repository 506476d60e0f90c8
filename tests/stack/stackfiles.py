"""Reading the stack files the way the tests need them: the compose file as the real parser resolves it."""

from __future__ import annotations

import os
import re
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COLLECTOR_FILE = REPO / "otel-collector.yaml"
DOCKERFILE = REPO / "Dockerfile"
PROCESSOR_SERVICE = "jobtrail-processor"
COLLECTOR_SERVICE = "otel-collector"


def compose_bin() -> str:
    """``$JOBTRAIL_COMPOSE_BIN`` (``./dev test`` sets it) or the repo's .venv-compose; fail loudly when absent."""
    path = os.environ.get("JOBTRAIL_COMPOSE_BIN") or str(REPO / ".venv-compose" / "bin" / "docker-compose")
    if not Path(path).exists():
        pytest.fail(f"the docker-compose v1 parser is missing at {path}; `./dev test` installs it")
    return path


def run_compose(*args: str, compose_file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_bin(), "-f", str(compose_file), *args],
        cwd=compose_file.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_scripts() -> dict[str, str]:
    """The console scripts the jobtrail distribution installs (name -> ``module:function``)."""
    return {
        script.name: script.value
        for script in entry_points(group="console_scripts")
        if script.dist is not None and script.dist.name == "jobtrail"
    }


ENV_REFERENCE = re.compile(r"\$\{env:(?P<name>\w+):-(?P<default>[^}]*)\}")
BUILDER_MANIFEST = REPO / "collector_processor" / "deploy" / "stack" / "builder-config.yaml"


def with_env_defaults(text: str) -> str:
    """A collector file as the collector reads it with none of its ``${env:NAME:-default}`` variables set."""
    return ENV_REFERENCE.sub(lambda match: match["default"], text)


def collector_config() -> dict[str, Any]:
    return yaml.safe_load(with_env_defaults(COLLECTOR_FILE.read_text()))


def host_port(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``scheme://host:port[/path]`` -> (host, port)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    assert parts.hostname and parts.port, f"{endpoint!r} names no host and port"
    return parts.hostname, parts.port


def option(command: list[str], flag: str) -> list[str]:
    """Every value given to ``flag`` in an argv list."""
    return [command[index + 1] for index, word in enumerate(command[:-1]) if word == flag]


def collector_listen_ports(config: dict[str, Any]) -> set[int]:
    ports = set()
    for receiver in config["receivers"].values():
        for protocol in (receiver or {}).get("protocols", {}).values():
            ports.add(host_port(protocol["endpoint"])[1])
    return ports


def port_mapping(entry: str) -> tuple[str, int, int]:
    """Compose v1's resolved ``HOST_IP:PUBLISHED:TARGET/PROTO`` -> (host ip, published, target)."""
    host_ip, published, target = entry.split("/")[0].rsplit(":", 2)
    return host_ip, int(published), int(target)


def volume_source(entry: str) -> str:
    """Compose v1's resolved ``SOURCE:TARGET:MODE`` -> SOURCE (an absolute path, or a named volume)."""
    return entry.split(":")[0]

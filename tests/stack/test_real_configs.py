"""The shipped collector and Jaeger files through the real binaries' own ``validate`` (``./dev stack-tools``)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from jobtrail.demo.stack import COLLECTOR_CONFIG, JAEGER_CONFIG, LOADBALANCING_CONFIG, StackTools

from tests.stack.stackfiles import REPO

pytestmark = [pytest.mark.slow, pytest.mark.stack]
ADDRESS_VARIABLES = re.compile(r"^(OTELCOL_|JAEGER_|JOBTRAIL_PROCESSOR_)")


def validate(binary: Path, config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``BINARY validate --config file:CONFIG`` with only ``env`` among the variables the files read."""
    clean = {name: value for name, value in os.environ.items() if not ADDRESS_VARIABLES.match(name)}
    return subprocess.run(
        [str(binary), "validate", "--config", f"file:{config}"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("config", [COLLECTOR_CONFIG, LOADBALANCING_CONFIG], ids=lambda path: path.name)
def test_the_real_collector_accepts_the_shipped_configs(stack_tools: StackTools, config: Path) -> None:
    as_shipped = validate(stack_tools.otelcol, config)
    assert as_shipped.returncode == 0, as_shipped.stderr
    local = validate(
        stack_tools.otelcol,
        config,
        OTELCOL_OTLP_GRPC_ENDPOINT="127.0.0.1:14317",
        JOBTRAIL_PROCESSOR_REPLICAS="[127.0.0.1:24317, 127.0.0.1:24318]",
        OTELCOL_METRICS_PORT="18888",
    )
    assert local.returncode == 0, local.stderr


def test_the_real_jaeger_accepts_its_config(stack_tools: StackTools) -> None:
    result = validate(stack_tools.jaeger, JAEGER_CONFIG)
    assert result.returncode == 0, result.stderr


def test_validation_has_teeth(stack_tools: StackTools, tmp_path: Path) -> None:
    """A pipeline naming an exporter that is not defined, and a mistyped setting, are refused."""
    document = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    document["service"]["pipelines"]["traces/in"]["exporters"] = ["otlp_grpc/nowhere"]
    undefined = tmp_path / "undefined.yaml"
    undefined.write_text(yaml.safe_dump(document))
    result = validate(stack_tools.otelcol, undefined)
    assert result.returncode != 0 and "otlp_grpc/nowhere" in result.stderr
    document = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    document["exporters"]["otlp_grpc/jobtrail"]["retry_on_failure"]["max_interval"] = "soon"
    mistyped = tmp_path / "mistyped.yaml"
    mistyped.write_text(yaml.safe_dump(document))
    result = validate(stack_tools.otelcol, mistyped)
    assert result.returncode != 0 and "max_interval" in result.stderr


def test_the_commented_dns_load_balancer_is_a_working_exporter(stack_tools: StackTools, tmp_path: Path) -> None:
    """Uncommented and put in traces/in, as otel-collector.yaml tells users to, the real collector takes it."""
    text = COLLECTOR_CONFIG.read_text()
    block = re.search(r"^  # (load_balancing/jobtrail:\n(?:  #   .*\n)+)", text, re.MULTILINE)
    assert block
    uncommented = re.sub(r"^  #( |$)", "  ", block.group(0), flags=re.MULTILINE)
    variant = text.replace(block.group(0), uncommented).replace(
        "exporters: [otlp_grpc/jobtrail]", "exporters: [load_balancing/jobtrail]"
    )
    document = yaml.safe_load(variant)
    del document["exporters"]["otlp_grpc/jobtrail"]
    config = tmp_path / "dns.yaml"
    config.write_text(yaml.safe_dump(document))
    result = validate(stack_tools.otelcol, config)
    assert result.returncode == 0, result.stderr


def test_stack_tools_prints_exactly_the_two_binaries(stack_tools: StackTools) -> None:
    """``./dev stack-tools`` (warm here: the session already has the binaries) prints two lines and nothing else."""
    result = subprocess.run(
        [str(REPO / "dev"), "stack-tools"], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"otelcol={stack_tools.otelcol}", f"jaeger={stack_tools.jaeger}"]

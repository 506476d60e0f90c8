"""The sampler is selectable the standard way: the SDK's own loader and ``opentelemetry-instrument`` find it by name."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from jobtrail.conventions import SAMPLER_NAME
from jobtrail.sampling import JobtrailParentBasedTraceIdRatio, jobtrail_parentbased_traceidratio
from opentelemetry.sdk._configuration import _import_sampler
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG

REPO = Path(__file__).resolve().parents[2]
SHOW_SAMPLER = "from opentelemetry import trace; print(trace.get_tracer_provider().sampler.get_description())"


def test_registered_in_the_sdks_sampler_entry_point_group():
    (entry,) = entry_points(group="opentelemetry_traces_sampler", name=SAMPLER_NAME)
    assert entry.load() is jobtrail_parentbased_traceidratio


def test_the_sdks_loader_builds_it_from_the_environment(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv(OTEL_TRACES_SAMPLER_ARG, "0.25")
    sampler = _import_sampler(SAMPLER_NAME)
    assert isinstance(sampler, JobtrailParentBasedTraceIdRatio)
    assert sampler.rate == 0.25
    assert caplog.records == []


@pytest.mark.parametrize("arg", ["2", "one tenth", ""])
def test_the_sdks_loader_with_a_bad_argument_samples_everything_with_one_warning(monkeypatch, caplog, arg):
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv(OTEL_TRACES_SAMPLER_ARG, arg)
    sampler = _import_sampler(SAMPLER_NAME)
    assert isinstance(sampler, JobtrailParentBasedTraceIdRatio)  # not the SDK's "Using default sampler" path
    assert sampler.rate == 1.0
    assert [record.name for record in caplog.records] == ["jobtrail.sampling"]


def test_the_sdks_loader_with_no_argument_samples_everything_with_one_warning(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    monkeypatch.delenv(OTEL_TRACES_SAMPLER_ARG, raising=False)
    assert _import_sampler(SAMPLER_NAME).rate == 1.0
    assert len(caplog.records) == 1


def instrumented_python(sampler: str, arg: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_") and key != "PYTHONWARNINGS"}
    env.update({OTEL_TRACES_SAMPLER: sampler, "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"})
    env["OTEL_LOGS_EXPORTER"] = "none"
    if arg is not None:
        env[OTEL_TRACES_SAMPLER_ARG] = arg
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / "opentelemetry-instrument"), sys.executable, "-c", SHOW_SAMPLER],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.slow
def test_opentelemetry_instrument_configures_it_from_the_environment():
    run = instrumented_python(SAMPLER_NAME, "0.1")
    assert run.stdout.strip() == "JobtrailParentBasedTraceIdRatio{0.1}"
    assert SAMPLER_NAME not in run.stderr


@pytest.mark.slow
def test_opentelemetry_instrument_with_a_bad_argument_warns_once_and_samples_everything():
    run = instrumented_python(SAMPLER_NAME, "ten percent")
    assert run.stdout.strip() == "JobtrailParentBasedTraceIdRatio{1.0}"
    assert run.stderr.count("OTEL_TRACES_SAMPLER_ARG 'ten percent' is not a ratio") == 1
    assert "Failed to initialize sampler" not in run.stderr

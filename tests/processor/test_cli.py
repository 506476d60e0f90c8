"""The command line and its configuration: layering, clear errors, and a SIGTERM that forwards what is held."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from jobtrail.processor.config import ConfigError, ProcessorConfig, load_config
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .builders import new_trace_id, request, span
from .conftest import wait_for


def test_defaults_bind_loopback_only():
    config = ProcessorConfig(export_to=["grpc://127.0.0.1:4317"]).validate()
    assert config.grpc_listen == "127.0.0.1:14317" and config.http_listen == "127.0.0.1:14318"
    assert config.hold_seconds == 2.0


def test_file_then_env_then_flags(tmp_path):
    config_file = tmp_path / "processor.yaml"
    config_file.write_text(
        "export_to: [grpc://127.0.0.1:4317]\nhold_seconds: 5\nmax_held_spans: 10\nqueue_max_spans: 7\n"
    )
    environ = {"JOBTRAIL_PROCESSOR_HOLD_SECONDS": "3", "JOBTRAIL_PROCESSOR_MAX_HELD_SPANS": "20"}

    config = load_config(str(config_file), environ=environ, overrides={"hold_seconds": 1.5, "grpc_listen": "off"})

    assert config.hold_seconds == 1.5
    assert config.max_held_spans == 20
    assert config.queue_max_spans == 7
    assert config.grpc_listen is None
    assert config.export_to == ["grpc://127.0.0.1:4317"]


def test_yaml_off_disables_a_listener(tmp_path):
    """YAML 1.1 reads a bare `off` as false; it must still mean "disabled", not the address 'False'."""
    config_file = tmp_path / "processor.yaml"
    config_file.write_text("export_to: grpc://127.0.0.1:4317\ngrpc_listen: off\nhold_seconds: 1\n")

    config = load_config(str(config_file), environ={})

    assert config.grpc_listen is None and config.http_listen == "127.0.0.1:14318"
    assert config.export_to == ["grpc://127.0.0.1:4317"] and config.hold_seconds == 1.0


def test_env_export_to_is_a_comma_list():
    environ = {"JOBTRAIL_PROCESSOR_EXPORT_TO": "grpc://a:1, file:///tmp/x.jsonl"}
    assert load_config(environ=environ).export_to == ["grpc://a:1", "file:///tmp/x.jsonl"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "export_to needs at least one URL"),
        ({"export_to": ["ftp://x:1"]}, "scheme must be one of"),
        ({"export_to": ["file://relative.jsonl"]}, "absolute path"),
        ({"export_to": ["grpc://a:1"], "hold_seconds": "soon"}, "hold_seconds: cannot use 'soon'"),
        ({"export_to": ["grpc://a:1"], "hold_seconds": -1}, "hold_seconds must not be negative"),
        ({"export_to": ["grpc://a:1"], "grpc_listen": "nowhere"}, "grpc_listen must be HOST:PORT"),
        ({"export_to": ["grpc://a:1"], "stitch_rule": "magic"}, "stitch_rule must be one of"),
        ({"export_to": ["grpc://a:1"], "holdseconds": 1}, "unknown setting 'holdseconds'"),
        ({"export_to": ["grpc://a:1"], "max_held_spans": 1.5}, "max_held_spans: cannot use 1.5"),
        ({"export_to": ["grpc://a:1"], "queue_max_spans": True}, "queue_max_spans: cannot use True"),
        ({"export_to": ["grpc://a:1"], "queue_max_bytes": 0}, "queue_max_bytes must be positive"),
        ({"export_to": ["grpc://a:1"], "grpc_listen": "off", "http_listen": "off"}, "at least one of"),
    ],
)
def test_bad_settings_say_which_and_why(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(environ={}, overrides=overrides)


def test_cli_refuses_bad_flags_with_exit_code_2():
    finished = subprocess.run(
        [sys.executable, "-m", "jobtrail.processor", "--export-to", "ftp://nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert "scheme must be one of" in finished.stderr


@pytest.mark.parametrize("flag", ["--listen-grpc", "--listen-http"])
def test_cli_says_when_its_port_is_taken(flag):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        finished = subprocess.run(
            [sys.executable, "-m", "jobtrail.processor", flag, address, "--export-to", "grpc://127.0.0.1:1"]
            + ["--listen-http" if flag == "--listen-grpc" else "--listen-grpc", "127.0.0.1:0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert finished.returncode == 2
    assert f"jobtrail-processor: cannot listen on {address}" in finished.stderr


def test_sigterm_forwards_held_spans_before_exit(grpc_downstream, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBTRAIL_PROCESSOR_")}
    # The installed console script this time (the other tests run `python -m jobtrail.processor`).
    script = Path(sys.executable).with_name("jobtrail-processor")
    assert script.exists(), f"{script} missing: install the package (pip install -e .)"
    process = subprocess.Popen(
        [
            str(script),
            "--listen-grpc",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
            "--export-to",
            grpc_downstream.url,
            "--hold",
            "600",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        ready = ""
        while "ready" not in ready:
            ready = process.stderr.readline()
            assert ready, "the processor exited before it was ready"
        http_port = int(re.search(r"http=(\d+)", ready).group(1))
        orphan = span("job work", new_trace_id(), b"\x07" * 8, kind=Span.SPAN_KIND_INTERNAL)
        post = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/traces",
            data=request(orphan).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        urllib.request.urlopen(post, timeout=10).close()

        def held_spans() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as response:
                return re.search(r"^jobtrail_processor_spans_held (\d+)$", response.read().decode(), re.M).group(1)

        wait_for(lambda: held_spans() == "1", "the span to be held")
        assert grpc_downstream.recorder.spans() == []

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        log = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    (forwarded,) = grpc_downstream.recorder.spans()
    assert forwarded.SerializeToString() == orphan.SerializeToString()
    assert "spans_forwarded_unchanged_total{reason=shutdown}=1" in log
    assert "spans_exported_total{exporter=" + grpc_downstream.url + "}=1" in log

"""Real OTLP/HTTP clients against the processor: the official OpenTelemetry JS exporters on Node (chunked bodies,
JSON and protobuf, gzip on and off), the Python SDK's, curl, and raw sockets (chunked, keep-alive, stalled)."""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import socket
import subprocess
import warnings
from pathlib import Path

import pytest
from google.rpc import status_pb2
from jobtrail.processor.telemetry import REQUESTS_REFUSED, SPANS_EXPORTED, SPANS_RECEIVED
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from .builders import new_trace_id, request, span
from .conftest import wait_for
from .test_backpressure import finished_spans

JS_DIR = Path(__file__).parent / "js"
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture(scope="session")
def node_senders() -> Path:
    """The JS project under tests/processor/js, installed from its lock (``npm ci``, once per lock change)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node/npm are not installed: the OpenTelemetry JS exporter tests did NOT run"
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    lock = (JS_DIR / "package-lock.json").read_text()
    stamp = JS_DIR / "node_modules" / ".jobtrail-stamp"
    if not stamp.exists() or stamp.read_text() != lock:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600)
        stamp.write_text(lock)
    return JS_DIR


def names_received(downstream) -> list[str]:
    return sorted(s.name for s in downstream.recorder.spans())


@pytest.mark.parametrize("protocol", ["json", "proto"])
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_the_official_js_exporters_deliver_every_span(
    node_senders, grpc_downstream, processor_process, protocol, compression
):
    """@opentelemetry/exporter-trace-otlp-http / -proto send Transfer-Encoding: chunked with no Content-Length."""
    processor = processor_process("--export-to", grpc_downstream.url)
    prefix = f"js {protocol} {compression}"

    sent = subprocess.run(
        ["node", "send.js", f"{processor.http_url}/v1/traces", protocol, compression, "120", "40", prefix],
        cwd=node_senders,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert json.loads(sent.stdout) == {"exported": 120, "failed": 0, "errors": []}
    wait_for(lambda: len(grpc_downstream.recorder.spans()) >= 120, "every JS span downstream")
    assert names_received(grpc_downstream) == sorted(f"{prefix} {index}" for index in range(120))
    assert grpc_downstream.recorder.resource_of(f"{prefix} 0")["service.name"] == f"node-{protocol}-{compression}"
    assert processor.metric("jobtrail_processor_spans_received_total") == 120
    assert processor.metric("jobtrail_processor_requests_refused_total") == 0


@pytest.mark.parametrize("compression", [HttpCompression.Gzip, HttpCompression.Deflate, HttpCompression.NoCompression])
def test_the_python_sdk_http_exporter_delivers_every_span(grpc_downstream, processor_process, compression):
    processor = processor_process("--export-to", grpc_downstream.url)
    exporter = HttpSpanExporter(endpoint=f"{processor.http_url}/v1/traces", compression=compression)

    assert exporter.export(finished_spans(50, "python")) == SpanExportResult.SUCCESS

    wait_for(lambda: len(grpc_downstream.recorder.spans()) >= 50, "every Python span downstream")
    assert names_received(grpc_downstream) == sorted(f"python {index}" for index in range(50))


def test_curl_sends_a_chunked_gzip_body(grpc_downstream, processor_process, tmp_path):
    processor = processor_process("--export-to", grpc_downstream.url)
    body = tmp_path / "request.pb.gz"
    body.write_bytes(gzip.compress(request(span("from curl", new_trace_id())).SerializeToString()))

    finished = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: application/x-protobuf"]
        + ["-H", "Content-Encoding: gzip", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{body}"]
        + [f"{processor.http_url}/v1/traces"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.stdout == "200", finished.stderr
    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 1, "the span curl sent")
    assert grpc_downstream.recorder.spans()[0].name == "from curl"


def test_chunked_and_sized_requests_share_one_keep_alive_connection(grpc_downstream, start_processor):
    processor = start_processor(export_to=[grpc_downstream.url])
    first = request(span("chunked", new_trace_id())).SerializeToString()
    second = request(span("sized", new_trace_id())).SerializeToString()
    connection = http.client.HTTPConnection("127.0.0.1", processor.http_port, timeout=30)
    try:
        connection.request("POST", "/v1/traces", body=iter([first[:5], first[5:9], first[9:]]), headers=PROTOBUF)
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200 and not answer.will_close
        sock = connection.sock
        connection.request("POST", "/v1/traces", body=second, headers=PROTOBUF)
        again = connection.getresponse()
        again.read()
        assert again.status == 200 and connection.sock is sock, "the same connection served both"
    finally:
        connection.close()
    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 2, "both spans")
    assert names_received(grpc_downstream) == ["chunked", "sized"]


def test_a_chunked_body_over_the_limit_is_413(grpc_downstream, start_processor):
    processor = start_processor(export_to=[grpc_downstream.url], max_request_bytes=64 * 1024)
    connection = http.client.HTTPConnection("127.0.0.1", processor.http_port, timeout=30)
    try:
        connection.request("POST", "/v1/traces", body=iter([b"\0" * 50_000] * 2), headers=PROTOBUF)
        answer = connection.getresponse()
        status, body = answer.status, answer.read()
    finally:
        connection.close()
    assert status == 413
    assert "over the 65536 byte limit" in status_pb2.Status.FromString(body).message
    assert processor.telemetry.value(REQUESTS_REFUSED, reason="too_large") == 1


def test_a_body_far_over_the_limit_is_refused_before_it_is_read(grpc_downstream, start_processor):
    """Past twice the limit the server itself answers 413 on the headers alone (nothing buffered)."""
    processor = start_processor(export_to=[grpc_downstream.url], max_request_bytes=64 * 1024)
    with socket.create_connection(("127.0.0.1", processor.http_port), timeout=30) as client:
        client.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        answer = client.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_stalled_bodies_hold_no_worker_and_are_closed_when_idle(grpc_downstream, start_processor, chunked):
    """More stalled uploads than worker threads: other requests still go through; the idle timeout closes them."""
    processor = start_processor(export_to=[grpc_downstream.url], http_idle_timeout_seconds=1.0)
    framing = b"Transfer-Encoding: chunked\r\n\r\n400\r\n" if chunked else b"Content-Length: 100000\r\n\r\n"
    stalled = []
    for _ in range(12):
        client = socket.create_connection(("127.0.0.1", processor.http_port), timeout=60)
        client.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n" + framing)
        client.sendall(b"\0" * 100)
        stalled.append(client)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", processor.http_port, timeout=30)
        connection.request("POST", "/v1/traces", body=request(span("meanwhile", new_trace_id())).SerializeToString(),
                           headers=PROTOBUF)  # fmt: skip
        assert connection.getresponse().status == 200
        connection.close()
        for client in stalled:
            assert client.recv(4096) == b"", "the server closed the stalled connection without an answer"
    finally:
        for client in stalled:
            client.close()
    wait_for(lambda: processor.telemetry.value(SPANS_EXPORTED) == 1, "the one complete request exported")
    assert processor.telemetry.value(SPANS_RECEIVED) == 1

"""Fixtures for the trail view: a real processor writing its file, and a Jaeger-api_v3-shaped HTTP server."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from jobtrail.otlp.json_codec import decode_request, encode_request
from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.pipeline import Pipeline
from jobtrail.trail.model import attributes_dict
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


@dataclass
class ProcessorFile:
    """A running processor with file output; ``processor`` sends spans to it over real OTLP/HTTP."""

    pipeline: Pipeline
    path: Path
    processor: SimpleSpanProcessor

    def finish(self) -> Path:
        """Stop the processor (it flushes everything held) and hand back the file it wrote."""
        self.processor.shutdown()
        self.pipeline.stop()
        return self.path


@pytest.fixture
def processor_file(tmp_path: Path) -> Iterator[ProcessorFile]:
    path = tmp_path / "traces.jsonl"
    pipeline = Pipeline(
        ProcessorConfig(grpc_listen=None, http_listen="127.0.0.1:0", export_to=[f"file://{path}"], hold_seconds=0.3)
    )
    pipeline.start()
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{pipeline.http_port}/v1/traces", timeout=10)
    running = ProcessorFile(pipeline, path, SimpleSpanProcessor(exporter))
    try:
        yield running
    finally:
        running.processor.shutdown()
        pipeline.stop()


class JaegerQueryStub(ThreadingHTTPServer):
    """Answers ``/api/v3/traces/{id}`` and ``/api/v3/traces?query.*`` like Jaeger 2.19's api_v3 HTTP gateway.

    There is no Docker engine here to run Jaeger itself, so this follows its gateway's documented rules:
    ``{"result": <OTLP JSON TracesData>}`` with hex ids and integer enums; 404 ``{"error": {...}}`` when
    nothing is found; 400 without the time window; camelCase parameters win over the deprecated snake_case
    spellings (a request that needs a snake_case one is recorded in ``deprecated_requests``, where Jaeger
    answers ``Deprecation: true``); ``query.attributes`` is a JSON object of string values, honoured only
    when ``honours_attributes`` (releases before 2.19 ignore it). It serves what a real processor wrote.
    """

    def __init__(self, requests: list[ExportTraceServiceRequest], honours_attributes: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _JaegerHandler)
        self.honours_attributes = honours_attributes
        self.traces: dict[str, ExportTraceServiceRequest] = {}
        self.seen_queries: list[dict[str, list[str]]] = []
        self.deprecated_requests: list[str] = []
        for request in requests:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        trace = self.traces.setdefault(span.trace_id.hex(), ExportTraceServiceRequest())
                        out = trace.resource_spans.add()
                        out.resource.CopyFrom(resource_spans.resource)
                        out_scope = out.scope_spans.add()
                        out_scope.scope.CopyFrom(scope_spans.scope)
                        out_scope.spans.add().CopyFrom(span)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def search(self, service: str, attributes: dict[str, str]) -> list[ExportTraceServiceRequest]:
        found = []
        for trace in self.traces.values():
            services = {attributes_dict(rs.resource.attributes).get("service.name") for rs in trace.resource_spans}
            spans = [span for rs in trace.resource_spans for ss in rs.scope_spans for span in ss.spans]
            has_attributes = any(
                all(str(attributes_dict(span.attributes).get(key)) == value for key, value in attributes.items())
                for span in spans
            )
            if service in services and (has_attributes or not self.honours_attributes):
                found.append(trace)
        return found


class _JaegerHandler(BaseHTTPRequestHandler):
    server: JaegerQueryStub

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = urllib.parse.urlsplit(self.path)
        if parts.path.startswith("/api/v3/traces/"):
            trace = self.server.traces.get(parts.path.rsplit("/", 1)[1])
            self._answer([trace] if trace else [])
            return
        if parts.path != "/api/v3/traces":
            self._error(404, "404 page not found")
            return
        query = urllib.parse.parse_qs(parts.query)
        self.server.seen_queries.append(query)

        def param(canonical: str, deprecated: str) -> str:
            """Jaeger's precedence: the camelCase name wins; the snake_case one is read with a deprecation."""
            if query.get(canonical, [""])[0]:
                return query[canonical][0]
            if query.get(deprecated, [""])[0]:
                self.server.deprecated_requests.append(deprecated)
                return query[deprecated][0]
            return ""

        service = param("query.serviceName", "query.service_name")
        bounds = [
            param("query.startTimeMin", "query.start_time_min"),
            param("query.startTimeMax", "query.start_time_max"),
        ]
        try:
            if not all(bounds):
                raise ValueError("query.startTimeMin and query.startTimeMax are required")
            for bound in bounds:
                datetime.fromisoformat(bound.replace("Z", "+00:00"))
            attributes = json.loads(query.get("query.attributes", ["{}"])[0])
        except ValueError as error:
            self._error(400, f"malformed query: {error}")
            return
        self._answer(self.server.search(service, attributes))

    def _answer(self, traces: list[ExportTraceServiceRequest]) -> None:
        if not traces:
            self._error(404, "No traces found")
            return
        combined = ExportTraceServiceRequest()
        for trace in traces:
            combined.resource_spans.extend(trace.resource_spans)
        body = b'{"result":' + encode_request(combined) + b"}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        body = json.dumps({"error": {"httpCode": status, "message": message}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        """Quiet: the tests read what matters from the answers."""


def read_requests(path: Path) -> list[ExportTraceServiceRequest]:
    return [decode_request(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def jaeger_stub_factory() -> Iterator:
    servers: list[JaegerQueryStub] = []

    def start(requests: list[ExportTraceServiceRequest], honours_attributes: bool = True) -> JaegerQueryStub:
        server = JaegerQueryStub(requests, honours_attributes)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()

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

from tests.trail.scenario import Emitted, emit_action


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


@pytest.fixture
def stitched_file(processor_file: ProcessorFile) -> tuple[Path, Emitted]:
    """The processor's file after one action (two failed attempts, then success), and what was emitted."""
    emitted = emit_action(processor_file.processor, failures=2)
    return processor_file.finish(), emitted


JAEGER_PINNED = "2.13.0"
"""Pre-2.19 rules: the Jaeger docker-compose.yml pins and ``./dev stack-tools`` builds."""
JAEGER_ATTRIBUTE_SEARCH = "2.19.0"
"""2.19 rules: camelCase parameters, ``query.attributes`` honoured, a default depth."""
STUB_MAX_TRACES = 100_000
"""Jaeger's memory storage ``max_traces`` (the all-in-one default); a deeper search is refused with a 500."""
_CANONICAL = {
    "query.service_name": "query.serviceName",
    "query.start_time_min": "query.startTimeMin",
    "query.start_time_max": "query.startTimeMax",
    "query.search_depth": "query.searchDepth",
}


class JaegerQueryStub(ThreadingHTTPServer):
    """Answers ``/api/v3/traces/{id}`` and ``/api/v3/traces?query.*`` by the rules of Jaeger's api_v3 HTTP gateway
    and memory storage, read from Jaeger's source at 2.13.0 and 2.19.0 (the real Jaeger runs in tests/stack).

    Both: ``{"result": <OTLP JSON>}`` with hex ids and integer enums; 404 ``{"error": {...}}`` when nothing is
    found; 400 without both time bounds; a trace matches when ONE of its spans is from the service's resource
    and starts inside the window (and, from 2.19, holds every searched attribute on itself, its scope, resource,
    events or links, compared as strings); at most ``depth`` traces, the most recently stored first.
    2.13: only snake_case names are read, the depth only from ``query.num_traces`` (none: the storage answers
    500), ``query.attributes`` is ignored. 2.19: camelCase wins over snake_case (a request that needed a
    snake_case name is recorded in ``deprecated_requests``), depth from ``query.searchDepth``,
    ``query.search_depth`` or ``query.num_traces`` (default 100), min must be before max.
    """

    def __init__(self, requests: list[ExportTraceServiceRequest], version: str = JAEGER_PINNED) -> None:
        super().__init__(("127.0.0.1", 0), _JaegerHandler)
        self.version = version
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

    @property
    def honours_attributes(self) -> bool:
        return self.version == JAEGER_ATTRIBUTE_SEARCH

    def search(
        self, service: str, window: tuple[datetime, datetime], attributes: dict[str, str], depth: int
    ) -> list[ExportTraceServiceRequest]:
        wanted = attributes if self.honours_attributes else {}
        newest_first = reversed(list(self.traces.values()))
        return [trace for trace in newest_first if _trace_matches(trace, service, window, wanted)][:depth]


def _as_string(value: object) -> str:
    """pcommon ``Value.AsString``: booleans lower-case, numbers and strings as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _holds(attributes, key: str, value: str) -> bool:
    found = attributes_dict(attributes)
    return key in found and _as_string(found[key]) == value


def _trace_matches(
    trace: ExportTraceServiceRequest, service: str, window: tuple[datetime, datetime], attributes: dict[str, str]
) -> bool:
    low, high = (int(bound.timestamp() * 1e9) for bound in window)
    for resource_spans in trace.resource_spans:
        if service and attributes_dict(resource_spans.resource.attributes).get("service.name") != service:
            continue
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if not low <= span.start_time_unix_nano <= high:
                    continue
                places = [
                    span.attributes,
                    scope_spans.scope.attributes,
                    resource_spans.resource.attributes,
                    *(event.attributes for event in span.events),
                    *(link.attributes for link in span.links),
                ]
                if all(any(_holds(place, key, value) for place in places) for key, value in attributes.items()):
                    return True
    return False


class _SearchError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
        try:
            self._answer(self._search(query))
        except _SearchError as error:
            self._error(error.status, str(error))

    def _search(self, query: dict[str, list[str]]) -> list[ExportTraceServiceRequest]:
        modern = self.server.honours_attributes

        def param(deprecated: str) -> str:
            canonical = _CANONICAL.get(deprecated)
            if modern and canonical and query.get(canonical, [""])[0]:
                return query[canonical][0]
            if query.get(deprecated, [""])[0] and (modern or deprecated != "query.search_depth"):
                if modern:
                    self.server.deprecated_requests.append(deprecated)
                return query[deprecated][0]
            return ""

        bounds = [param("query.start_time_min"), param("query.start_time_max")]
        if not all(bounds):
            raise _SearchError(400, "query.start_time_min and query.start_time_max are required")
        try:
            window = tuple(datetime.fromisoformat(bound.replace("Z", "+00:00")) for bound in bounds)
            attributes = json.loads(query.get("query.attributes", ["{}"])[0]) if modern else {}
            depth_text = param("query.search_depth") or query.get("query.num_traces", [""])[0]
            depth = int(depth_text) if depth_text else (100 if modern else 0)
        except ValueError as error:
            raise _SearchError(400, f"malformed parameter: {error}") from None
        if modern and not window[0] < window[1]:
            raise _SearchError(400, "query.startTimeMin must be before query.startTimeMax")
        if not 0 < depth <= STUB_MAX_TRACES:
            raise _SearchError(500, "search depth must be greater than 0 and less than max traces")
        return self.server.search(param("query.service_name"), (window[0], window[1]), attributes, depth)

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

    def start(requests: list[ExportTraceServiceRequest], version: str = JAEGER_PINNED) -> JaegerQueryStub:
        server = JaegerQueryStub(requests, version)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()

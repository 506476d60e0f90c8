"""Real sockets on both sides of the processor: SDK OTLP exporters in front, recording OTLP receivers behind."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from jobtrail.conventions import ATTR_LINK_TYPE, LINK_TYPE_ENQUEUED_BY, LINK_TYPE_RETRY_OF
from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.pipeline import Pipeline
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind

WAIT_SECONDS = 30.0


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after a generous bound (never a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class Recorder:
    """What a downstream OTLP receiver got, in arrival order."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()

    def record(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def spans(self) -> list[Span]:
        with self.lock:
            return [
                span for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for span in ss.spans
            ]

    def spans_by_name(self) -> dict[str, Span]:
        return {span.name: span for span in self.spans()}

    def resource_of(self, span_name: str) -> dict[str, str]:
        with self.lock:
            for request in self.requests:
                for rs in request.resource_spans:
                    for ss in rs.scope_spans:
                        if any(span.name == span_name for span in ss.spans):
                            return {kv.key: kv.value.string_value for kv in rs.resource.attributes}
        raise KeyError(span_name)


class GrpcDownstream(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC receiver; ``stop()`` and ``start()`` again on the same port simulate an outage."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.port = 0
        self.refuse_with: grpc.StatusCode | None = None
        self.calls = 0
        self._server: grpc.Server | None = None

    def Export(self, request: ExportTraceServiceRequest, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        self.calls += 1
        if self.refuse_with is not None:
            context.abort(self.refuse_with, "refused by the test")
        self.recorder.record(request)
        return ExportTraceServiceResponse()

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"


class HttpDownstream:
    """A real OTLP/HTTP receiver; ``script`` lists (status, headers) answers to give before accepting."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.script: list[tuple[int, dict[str, str]]] = []
        self.answers: list[int] = []
        downstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, headers = downstream.script.pop(0) if downstream.script else (200, {})
                downstream.answers.append(status)
                if status == 200:
                    downstream.recorder.record(ExportTraceServiceRequest.FromString(body))
                    payload = ExportTraceServiceResponse().SerializeToString()
                else:
                    payload = b"refused by the test"
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        self._handler = Handler
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening and drop open keep-alive connections (an outage); ``start()`` reuses the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    close = stop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def grpc_downstream() -> Iterator[GrpcDownstream]:
    downstream = GrpcDownstream()
    downstream.start()
    yield downstream
    downstream.stop()


@pytest.fixture
def http_downstream() -> Iterator[HttpDownstream]:
    downstream = HttpDownstream()
    yield downstream
    downstream.close()


@pytest.fixture
def start_processor() -> Iterator[Callable[..., Pipeline]]:
    """Start a Pipeline on ephemeral 127.0.0.1 ports; stopped (and so flushed) at teardown."""
    started: list[Pipeline] = []

    def start(**settings: object) -> Pipeline:
        settings.setdefault("grpc_listen", "127.0.0.1:0")
        settings.setdefault("http_listen", "127.0.0.1:0")
        settings.setdefault("hold_seconds", 30.0)
        settings.setdefault("retry_initial_backoff_seconds", 0.05)
        settings.setdefault("retry_max_backoff_seconds", 0.5)
        settings.setdefault("shutdown_timeout_seconds", 3.0)
        pipeline = Pipeline(ProcessorConfig(**settings))
        pipeline.start()
        started.append(pipeline)
        return pipeline

    yield start
    for pipeline in started:
        pipeline.stop()


@pytest.fixture
def processor(grpc_downstream: GrpcDownstream, start_processor: Callable[..., Pipeline]) -> Pipeline:
    """A processor exporting over gRPC to ``grpc_downstream`` with a long hold window."""
    return start_processor(export_to=[grpc_downstream.url])


def sdk_provider(service: str, exporter: object) -> TracerProvider:
    """A separate SDK provider that exports every span as it ends (so each span is its own OTLP request)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def grpc_sender(pipeline: Pipeline, service: str, compression: grpc.Compression | None = None) -> TracerProvider:
    exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{pipeline.grpc_port}", insecure=True, compression=compression)
    return sdk_provider(service, exporter)


def http_sender(pipeline: Pipeline, service: str, compression: HttpCompression | None = None) -> TracerProvider:
    endpoint = f"http://127.0.0.1:{pipeline.http_port}/v1/traces"
    return sdk_provider(service, HttpSpanExporter(endpoint=endpoint, compression=compression))


def scrape(pipeline: Pipeline) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{pipeline.http_port}/metrics", timeout=10) as response:
        return response.read().decode("utf-8")


def run_attempt(provider, enqueue_context, name="process default", previous=None, before_root=None):
    """Emit one attempt the way the RQ instrumentation does: a new trace root linked to the enqueue span.

    The child ends (and is exported) before its root; ``before_root`` runs in between.
    """
    tracer = provider.get_tracer("tests.worker")
    links = [Link(enqueue_context, {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY})]
    if previous is not None:
        links.append(Link(previous, {ATTR_LINK_TYPE: LINK_TYPE_RETRY_OF}))
    root = tracer.start_span(name, context=otel_context.Context(), kind=SpanKind.CONSUMER, links=links)
    child = tracer.start_span("job work", context=trace.set_span_in_context(root))
    child.end()
    if before_root is not None:
        before_root()
    root.end()
    return root.get_span_context(), child.get_span_context()


def enqueue_in_request(provider):
    tracer = provider.get_tracer("tests.api")
    with (
        tracer.start_as_current_span("POST /refunds", kind=SpanKind.SERVER) as server,
        tracer.start_as_current_span("send default", kind=SpanKind.PRODUCER) as enqueue,
    ):
        pass
    return server.get_span_context(), enqueue.get_span_context()

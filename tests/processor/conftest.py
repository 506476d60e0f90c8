"""Real sockets on both sides of the processor: SDK OTLP exporters in front, the test kit's OTLP receivers behind."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
from jobtrail.conventions import ATTR_LINK_TYPE, LINK_TYPE_ENQUEUED_BY, LINK_TYPE_RETRY_OF
from jobtrail.processor import stitch
from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.pipeline import Pipeline
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind

from tests.fixtures.otlp_receiver import GrpcTraceReceiver, HttpTraceReceiver
from tests.fixtures.processor_process import ProcessorProcess, processor_command

WAIT_SECONDS = 30.0


@pytest.fixture(scope="module", params=["c-scanner", "python"])
def both_stitch_paths(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a module's tests with the stitcher's C scanner (``jobtrail._otlp_wire``) and again with its Python
    path, the one the processor takes where the scanner is not installed (stitchers made meanwhile take it)."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "python":
            patch.setattr(stitch, "_otlp_wire", None)
        yield str(request.param)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after a generous bound (never a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def grpc_downstream(grpc_receiver: GrpcTraceReceiver) -> GrpcTraceReceiver:
    """The collector the processor exports to over gRPC: the test kit's receiver."""
    return grpc_receiver


@pytest.fixture
def http_downstream(http_receiver: HttpTraceReceiver) -> HttpTraceReceiver:
    """The collector the processor exports to over HTTP: the test kit's receiver."""
    return http_receiver


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
def processor(grpc_downstream: GrpcTraceReceiver, start_processor: Callable[..., Pipeline]) -> Pipeline:
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


@pytest.fixture
def processor_process(tmp_path) -> Iterator[Callable[..., ProcessorProcess]]:
    """Start ``python -m jobtrail.processor ARGS...`` as a subprocess; killed at teardown if still running."""
    started: list[ProcessorProcess] = []

    def start(*args: str) -> ProcessorProcess:
        process = ProcessorProcess.start(processor_command(*args), tmp_path / f"processor-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()

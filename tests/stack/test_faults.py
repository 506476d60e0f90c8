"""Faults with the real binaries: a full processor pushing back on the real collector, and Jaeger going away.

The processor sits between two real collectors running otel-collector.yaml as shipped: the first sends it
everything through `otlp_grpc/jobtrail` (with the file's `sending_queue` and `retry_on_failure`), the second
takes its output into Jaeger. While the second is down, the processor's small export queue fills and it refuses
with UNAVAILABLE + RetryInfo; once the second is up, every span must reach Jaeger. Then Jaeger stops, and the
trail names it and reads the processor's file instead.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from jobtrail.demo.stack import COLLECTOR_CONFIG, Collector, Jaeger, Processor, StackTools
from jobtrail.trail.cli import main as trail_main
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.stack.conftest import eventually, jaeger_trace

pytestmark = [pytest.mark.slow, pytest.mark.stack]
TRACES = 40
SPANS_PER_TRACE = 10
PROCESSOR_QUEUE_SPANS = SPANS_PER_TRACE
"""One trace fills the processor's export queue while its next hop is down; every later request is refused."""


def processor_counter(processor: Processor, name: str, **labels: str) -> float:
    """One of the processor's own counters, from its ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{processor.http_port}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def send_traces(endpoint: str, count: int) -> list[str]:
    """``count`` traces of SPANS_PER_TRACE spans each, through a real SDK exporter; their trace ids."""
    provider = TracerProvider(resource=Resource.create({"service.name": "faults-app"}), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer(__name__)
    trace_ids = []
    for number in range(count):
        with tracer.start_as_current_span(f"request {number}") as root:
            for step in range(SPANS_PER_TRACE - 1):
                with tracer.start_as_current_span(f"step {step}"):
                    pass
        trace_ids.append(format(root.get_span_context().trace_id, "032x"))
    provider.shutdown()
    return trace_ids


def test_a_refusing_processor_between_two_collectors_loses_nothing(
    stack_tools: StackTools, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jaeger = Jaeger(stack_tools.jaeger, tmp_path).start()
    outbound = Collector(
        stack_tools.otelcol, COLLECTOR_CONFIG, tmp_path, "otelcol-out", {"JAEGER_OTLP_ENDPOINT": jaeger.otlp_endpoint}
    )
    processor = Processor(
        "processor",
        tmp_path,
        [f"grpc://{outbound.stitched_endpoint}"],
        hold_seconds=0.2,
        env={
            "JOBTRAIL_PROCESSOR_QUEUE_MAX_SPANS": str(PROCESSOR_QUEUE_SPANS),
            "JOBTRAIL_PROCESSOR_RETRY_MAX_BACKOFF_SECONDS": "1",
        },
    ).start()
    inbound = Collector(stack_tools.otelcol, COLLECTOR_CONFIG, tmp_path, "otelcol-in")
    try:
        inbound.start(JOBTRAIL_PROCESSOR_ENDPOINT=processor.grpc_endpoint, JAEGER_OTLP_ENDPOINT=jaeger.otlp_endpoint)
        trace_ids = send_traces(inbound.otlp_grpc_endpoint, 1)
        eventually(
            lambda: processor_counter(processor, "jobtrail_processor_spans_received_total") >= SPANS_PER_TRACE,
            "the first trace to fill the processor's export queue",
        )
        trace_ids += send_traces(inbound.otlp_grpc_endpoint, TRACES - 1)
        eventually(
            lambda: processor_counter(processor, "jobtrail_processor_requests_refused_total", reason="overloaded"),
            "the processor to refuse while its next hop is down",
        )
        outbound.start(JOBTRAIL_PROCESSOR_ENDPOINT=processor.grpc_endpoint)
        for trace_id in trace_ids:
            eventually(
                lambda trace_id=trace_id: len(jaeger_trace(jaeger.url, trace_id)) == SPANS_PER_TRACE,
                f"all {SPANS_PER_TRACE} spans of {trace_id} in Jaeger",
                timeout=120,
            )
        sent = TRACES * SPANS_PER_TRACE
        assert inbound.counter("otelcol_exporter_sent_spans", "otlp_grpc/jobtrail") == sent
        assert inbound.counter("otelcol_exporter_send_failed_spans", "otlp_grpc/jobtrail") == 0
        assert processor_counter(processor, "jobtrail_processor_spans_export_dropped_total") == 0
        assert re.search(r"(?i)unavailable", inbound.process.log_text() if inbound.process else ""), (
            "the collector logged the refusal it retried"
        )

        jaeger.stop()
        args = ["trail", trace_ids[0], "--jaeger", jaeger.url, "--file", str(processor.trace_file)]
        assert trail_main(args) == 0
        err = capsys.readouterr().err
        assert f"cannot reach Jaeger at {jaeger.url}" in err and f"used the file {processor.trace_file} instead" in err
    finally:
        inbound.stop()
        processor.stop()
        outbound.stop()
        jaeger.stop()

"""The Jaeger stand-in of tests/trail answers like the real Jaeger 2.13.0: same data, same queries, same answers.

The fast trail tests run against the stand-in (no Go needed); this keeps it honest: every search the trail
makes, and the ways a search goes wrong (no depth, no window, a window elsewhere, a small depth, another
service), is sent to both, and the status codes and the traces found must agree.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest
from jobtrail.demo.stack import Jaeger, StackTools
from jobtrail.trail import JaegerSource, Lookup
from jobtrail.trail.cli import DEFAULT_SERVICES
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.stack.conftest import eventually, jaeger_json, jaeger_spans
from tests.trail.conftest import JAEGER_PINNED, JaegerQueryStub
from tests.trail.scenario import Emitted, emit_action
from tests.trail.test_sources import SCENARIO_NOW

pytestmark = [pytest.mark.slow, pytest.mark.stack]


def one_trace_per_request(spans) -> list[ExportTraceServiceRequest]:
    """The SDK's spans as one export request per trace, in the order the traces began (Jaeger stores in order)."""
    by_trace: dict[int, list] = {}
    for span in sorted(spans, key=lambda span: span.start_time):
        by_trace.setdefault(span.context.trace_id, []).append(span)
    return [encode_spans(group) for group in by_trace.values()]


@pytest.fixture(scope="module")
def both(stack_tools: StackTools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, list[Emitted]]]:
    """(real Jaeger URL, stand-in URL, the two actions both hold): two unstitched trails, 1 + 2 attempts."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    emitted = [
        emit_action(processor, request_id="req_00000000000000aa", job_id="job-a", failures=0),
        emit_action(processor, request_id="req_00000000000000bb", job_id="job-b", failures=1),
    ]
    requests = one_trace_per_request(exporter.get_finished_spans())
    jaeger = Jaeger(stack_tools.jaeger, tmp_path_factory.mktemp("jaeger")).start()
    stand_in = JaegerQueryStub(requests, JAEGER_PINNED)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    try:
        # One trace at a time, each stored before the next is sent: traces arriving in one batch are stored in
        # no fixed order, and "the newest N traces" must mean the same thing in both.
        with grpc.insecure_channel(jaeger.otlp_endpoint) as channel:
            for request in requests:
                TraceServiceStub(channel).Export(request, timeout=10)
                trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
                eventually(
                    lambda trace_id=trace_id: jaeger_json(jaeger.url, f"/api/v3/traces/{trace_id}?raw_traces=true"),
                    f"trace {trace_id} stored in Jaeger",
                )
        yield jaeger.url, stand_in.url, emitted
    finally:
        stand_in.shutdown()
        stand_in.server_close()
        jaeger.stop()


def answer(base_url: str, path: str) -> tuple[int, set[str]]:
    """(HTTP status, trace ids found) for one api_v3 request."""
    try:
        with urllib.request.urlopen(base_url + path, timeout=10) as response:  # noqa: S310 (127.0.0.1)
            body = response.read()
    except urllib.error.HTTPError as error:
        return error.code, set()
    return 200, {span.trace_id for span in jaeger_spans(json.loads(body))}


def searches(emitted: list[Emitted]) -> dict[str, str]:
    """Every search the trail makes for these actions, and the ways a search can be wrong."""
    older, newer = emitted
    source = JaegerSource("", DEFAULT_SERVICES, now=SCENARIO_NOW)
    made = {
        f"{kind} {service}": source.search_url(service, Lookup.parse(value))
        for service in DEFAULT_SERVICES
        for kind, value in (
            ("request id", older.request_id),
            ("job id", newer.job_id),
            ("original trace id", newer.attempt_trace_ids[0]),
        )
    }
    ours = made[f"request id {DEFAULT_SERVICES[0]}"]
    made["depth 1"] = ours.replace("num_traces=100", "num_traces=1")
    made["no num_traces"] = ours.replace("query.num_traces=100", "query.other=100")
    made["no start_time_min"] = ours.replace("query.start_time_min", "query.other")
    week_later = JaegerSource("", DEFAULT_SERVICES, now=SCENARIO_NOW + timedelta(days=7))
    made["window a week later"] = week_later.search_url(DEFAULT_SERVICES[0], Lookup.parse(older.request_id))
    made["trace by id"] = f"/api/v3/traces/{older.request_trace_id}"
    made["unknown trace id"] = f"/api/v3/traces/{'f' * 32}"
    return made


def test_the_stand_in_answers_every_search_as_the_real_jaeger_does(both: tuple[str, str, list[Emitted]]) -> None:
    jaeger_url, stand_in_url, emitted = both
    differences = {}
    statuses = set()
    for name, path in searches(emitted).items():
        real, stand_in = answer(jaeger_url, path), answer(stand_in_url, path)
        statuses.add(real[0])
        if real != stand_in:
            differences[name] = {"jaeger": real, "stand-in": stand_in}
    assert differences == {}
    assert statuses == {200, 400, 404, 500}, "the searches cover found, refused, nothing found and storage errors"


def test_the_trail_finds_the_same_on_both(both: tuple[str, str, list[Emitted]]) -> None:
    jaeger_url, stand_in_url, emitted = both
    for action in emitted:
        for identifier in (action.request_id, action.job_id, action.attempt_trace_ids[0]):
            lookup = Lookup.parse(identifier)
            found = [
                {span.span_id for span in JaegerSource(url, DEFAULT_SERVICES, now=SCENARIO_NOW).find(lookup).spans}
                for url in (jaeger_url, stand_in_url)
            ]
            assert found[0] == found[1] and found[0], identifier

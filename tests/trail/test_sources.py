"""The trail view on a real processor's file output and on a stand-in with Jaeger's api_v3 rules, CLI included.

The same source against the real Jaeger binary: tests/stack."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from jobtrail.conventions import (
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_REQUEST_ID,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    ATTR_STITCHED_PARENT_FROM_LINK,
)
from jobtrail.trail import FileSource, JaegerSource, Lookup, TrailNotFound
from jobtrail.trail.cli import DEFAULT_SERVICES, main
from jobtrail.trail.model import KIND_CONSUMER
from jobtrail.trail.sources import JAEGER_SEARCH_DEPTH
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.trail.conftest import JAEGER_ATTRIBUTE_SEARCH, JAEGER_PINNED, read_requests
from tests.trail.scenario import T0_NS, emit_action


def test_file_source_finds_the_one_stitched_trace_by_every_identifier(stitched_file) -> None:
    path, emitted = stitched_file
    by_request = FileSource(str(path)).find(Lookup.parse(emitted.request_id)).spans
    assert {span.trace_id for span in by_request} == {emitted.request_trace_id}
    attempts = sorted((span for span in by_request if span.kind == KIND_CONSUMER), key=lambda span: span.start_ns)
    assert [span.attributes[ATTR_STITCHED_ORIGINAL_TRACE_ID] for span in attempts] == emitted.attempt_trace_ids
    assert all(span.attributes[ATTR_STITCHED_PARENT_FROM_LINK] is True for span in attempts)
    for identifier in (emitted.job_id, emitted.request_trace_id, emitted.attempt_trace_ids[1]):
        found = FileSource(str(path)).find(Lookup.parse(identifier)).spans
        assert {(span.trace_id, span.span_id) for span in found} == {(s.trace_id, s.span_id) for s in by_request}


def test_cli_prints_the_timeline_from_the_file(stitched_file, capsys) -> None:
    path, emitted = stitched_file
    assert main(["trail", emitted.request_id, "--file", str(path), "--utc"]) == 0
    out = capsys.readouterr().out
    assert f"trail of {emitted.request_id} (trace {emitted.request_trace_id})" in out
    assert out.count("failed: SMTPAuthenticationError; retry scheduled") == 2
    assert "first broken step: nothing is broken: job job-84721 succeeded on attempt 3 after 2 failed" in out


def test_cli_json_output(stitched_file, capsys) -> None:
    path, emitted = stitched_file
    assert main(["trail", emitted.job_id, "--file", str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["query"] == emitted.job_id
    assert document["trace_ids"] == [emitted.request_trace_id]
    assert document["final_state"] == "succeeded"
    assert [entry["kind"] for entry in document["entries"]].count("attempt") == 3


def test_rotated_and_damaged_files_are_read_with_a_warning(stitched_file, capsys) -> None:
    path, emitted = stitched_file
    path.rename(path.with_name(path.name + ".1"))
    request_id_attribute = {"key": ATTR_REQUEST_ID, "value": {"stringValue": emitted.request_id}}
    damaged = {"traceId": "xyz", "attributes": [request_id_attribute]}
    path.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [damaged]}]}]}) + "\n")
    assert main(["trail", emitted.request_id, "--file", str(path)]) == 0
    captured = capsys.readouterr()
    assert f"warning: {path}:1 skipped: resourceSpans[0].scopeSpans[0].spans[0].traceId" in captured.err
    assert "attempt 3 picked up" in captured.out


def test_unknown_identifier_and_missing_file(stitched_file, tmp_path: Path, capsys) -> None:
    path, _ = stitched_file
    assert main(["trail", "req_ffffffffffffffff", "--file", str(path)]) == 1
    assert "holds request id req_ffffffffffffffff" in capsys.readouterr().err
    assert main(["trail", "req_ffffffffffffffff", "--file", str(tmp_path / "absent.jsonl")]) == 2
    assert "no trace file at" in capsys.readouterr().err
    with pytest.raises(TrailNotFound):
        FileSource(str(path)).find(Lookup.parse("no-such-job"))


def since_the_scenario() -> str:
    """``--lookback-hours`` that reaches back to the scenario's fixed clock (Jaeger searches a time window)."""
    return str(math.ceil((time.time() - T0_NS / 1e9) / 3600) + 1)


SCENARIO_NOW = datetime.fromtimestamp(T0_NS / 1e9 + 3600, tz=timezone.utc)
"""An hour after the scenario: inside a 24 h lookback."""


@pytest.mark.parametrize("version", [JAEGER_PINNED, JAEGER_ATTRIBUTE_SEARCH])
def test_jaeger_source_is_read_by_the_pinned_and_the_attribute_search_releases(
    stitched_file, jaeger_stub_factory, capsys, version: str
) -> None:
    path, emitted = stitched_file
    jaeger = jaeger_stub_factory(read_requests(path), version)
    args = ["trail", emitted.request_id, "--jaeger", jaeger.url, "--utc", "--lookback-hours", since_the_scenario()]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("failed: SMTPAuthenticationError; retry scheduled") == 2
    assert "first broken step: nothing is broken: job job-84721 succeeded on attempt 3 after 2 failed" in out
    query = jaeger.seen_queries[0]
    assert query["query.serviceName"] == query["query.service_name"] == [DEFAULT_SERVICES[0]]
    assert query["query.searchDepth"] == query["query.num_traces"] == [str(JAEGER_SEARCH_DEPTH)]
    assert json.loads(query["query.attributes"][0]) == {ATTR_REQUEST_ID: emitted.request_id}
    assert query["query.startTimeMin"][0].endswith("Z") and query["query.startTimeMax"][0].endswith("Z")
    assert jaeger.deprecated_requests == [], "2.19 reads the canonical names; the snake_case ones are for older ones"


def test_the_pinned_jaeger_refuses_a_search_without_num_traces(stitched_file, jaeger_stub_factory) -> None:
    """Why ``query.num_traces`` is sent: before 2.19 it is the only depth read, and memory storage needs one."""
    path, emitted = stitched_file
    jaeger = jaeger_stub_factory(read_requests(path))
    source = JaegerSource(jaeger.url, DEFAULT_SERVICES, now=SCENARIO_NOW)
    url = source.search_url(DEFAULT_SERVICES[0], Lookup.parse(emitted.request_id)).replace("query.num_traces", "x")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(jaeger.url + url)
    assert refused.value.code == 500


def test_jaeger_that_ignores_attributes_still_gives_only_the_matching_trail(
    processor_file, jaeger_stub_factory
) -> None:
    wanted = emit_action(processor_file.processor, request_id="req_00000000000000aa", job_id="job-1")
    other = emit_action(processor_file.processor, request_id="req_00000000000000bb", job_id="job-2")
    jaeger = jaeger_stub_factory(read_requests(processor_file.finish()), JAEGER_PINNED)
    spans = JaegerSource(jaeger.url, DEFAULT_SERVICES, now=SCENARIO_NOW).find(Lookup.parse(wanted.request_id)).spans
    assert {span.trace_id for span in spans} == {wanted.request_trace_id}
    assert other.request_trace_id not in {span.trace_id for span in spans}


def test_a_search_deeper_than_jaeger_answers_says_so(processor_file, jaeger_stub_factory) -> None:
    """The pinned Jaeger answers the newest ``depth`` traces of the service: an older trail is out of reach."""
    older = emit_action(processor_file.processor, request_id="req_00000000000000aa", job_id="job-1", failures=0)
    emit_action(processor_file.processor, request_id="req_00000000000000bb", job_id="job-2", failures=0)
    jaeger = jaeger_stub_factory(read_requests(processor_file.finish()), JAEGER_PINNED)
    with pytest.raises(TrailNotFound, match="answered 1 traces of jobtrail-demo-api \\(the search depth\\)"):
        JaegerSource(jaeger.url, DEFAULT_SERVICES[:1], now=SCENARIO_NOW, depth=1).find(Lookup.parse(older.request_id))
    found = JaegerSource(jaeger.url, DEFAULT_SERVICES[:1], now=SCENARIO_NOW, depth=2).find(
        Lookup.parse(older.request_id)
    )
    assert {span.trace_id for span in found.spans} == {older.request_trace_id}


@pytest.mark.parametrize("version", [JAEGER_PINNED, JAEGER_ATTRIBUTE_SEARCH])
def test_jaeger_searches_only_its_time_window(stitched_file, jaeger_stub_factory, version: str) -> None:
    path, emitted = stitched_file
    jaeger = jaeger_stub_factory(read_requests(path), version)
    a_week_later = SCENARIO_NOW + timedelta(days=7)
    with pytest.raises(TrailNotFound):
        JaegerSource(jaeger.url, DEFAULT_SERVICES, now=a_week_later).find(Lookup.parse(emitted.request_id))
    in_reach = JaegerSource(jaeger.url, DEFAULT_SERVICES, now=a_week_later, lookback=timedelta(days=8))
    assert {span.trace_id for span in in_reach.find(Lookup.parse(emitted.request_id)).spans} == {
        emitted.request_trace_id
    }


def test_attribute_search_needs_service_and_attribute_on_the_same_span(stitched_file, jaeger_stub_factory) -> None:
    """An original trace id is on the worker's stitched attempt only: the API's search does not match that trace."""
    path, emitted = stitched_file
    jaeger = jaeger_stub_factory(read_requests(path), JAEGER_ATTRIBUTE_SEARCH)
    lookup = Lookup.parse(emitted.attempt_trace_ids[0])
    with pytest.raises(TrailNotFound):
        JaegerSource(jaeger.url, DEFAULT_SERVICES[:1], now=SCENARIO_NOW).find(lookup)
    found = JaegerSource(jaeger.url, DEFAULT_SERVICES[1:], now=SCENARIO_NOW).find(lookup).spans
    assert {span.trace_id for span in found} == {emitted.request_trace_id}


def test_jaeger_source_finds_a_stitched_attempt_by_its_original_trace_id(stitched_file, jaeger_stub_factory) -> None:
    path, emitted = stitched_file
    jaeger = jaeger_stub_factory(read_requests(path))
    source = JaegerSource(jaeger.url, DEFAULT_SERVICES, now=SCENARIO_NOW)
    direct = source.find(Lookup.parse(emitted.request_trace_id)).spans
    via_original = source.find(Lookup.parse(emitted.attempt_trace_ids[0])).spans
    assert {span.span_id for span in via_original} == {span.span_id for span in direct}
    assert len(direct) == 16  # action, fetch, server, send, 3 polls; per attempt: attempt, pickup marker, step


@pytest.mark.parametrize("version", [JAEGER_PINNED, JAEGER_ATTRIBUTE_SEARCH])
def test_jaeger_source_gathers_an_unstitched_trail_across_services(jaeger_stub_factory, version: str) -> None:
    exporter = InMemorySpanExporter()
    emitted = emit_action(SimpleSpanProcessor(exporter), failures=1)
    jaeger = jaeger_stub_factory([encode_spans(exporter.get_finished_spans())], version)
    spans = JaegerSource(jaeger.url, DEFAULT_SERVICES, now=SCENARIO_NOW).find(Lookup.parse(emitted.request_id)).spans
    assert {span.trace_id for span in spans} == {emitted.request_trace_id, *emitted.attempt_trace_ids}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_jaeger_is_a_clear_error(capsys) -> None:
    port = free_port()
    assert main(["trail", "req_0123456789abcdef", "--jaeger", f"http://127.0.0.1:{port}"]) == 2
    assert f"cannot reach Jaeger at http://127.0.0.1:{port}" in capsys.readouterr().err


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = b'{"error":{"httpCode":503,"message":"storage unavailable"}}'
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        """Quiet."""


@pytest.fixture
def failing_jaeger() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("jaeger", ["down", "5xx"])
def test_a_failing_jaeger_is_named_and_the_file_answers_instead(
    stitched_file, failing_jaeger: str, capsys, jaeger: str
) -> None:
    path, emitted = stitched_file
    url = failing_jaeger if jaeger == "5xx" else f"http://127.0.0.1:{free_port()}"
    assert main(["trail", emitted.request_id, "--jaeger", url, "--file", str(path), "--utc"]) == 0
    captured = capsys.readouterr()
    failure = f"Jaeger answered 503 for {url}/api/v3/traces" if jaeger == "5xx" else f"cannot reach Jaeger at {url}"
    assert failure in captured.err and f"used the file {path} instead" in captured.err
    assert "attempt 3 picked up" in captured.out
    assert main(["trail", emitted.request_id, "--jaeger", url]) == 2, "without a file, the failure is the answer"
    assert failure in capsys.readouterr().err
    assert main(["trail", "req_ffffffffffffffff", "--jaeger", url, "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert failure in err and f"nothing in {path} holds" in err, "a broken Jaeger is never told as 'not found'"


def test_jaeger_source_finds_a_32_hex_job_id_through_the_job_id_search(processor_file, jaeger_stub_factory) -> None:
    job_id = uuid.uuid4().hex
    emitted = emit_action(processor_file.processor, job_id=job_id, failures=0)
    jaeger = jaeger_stub_factory(read_requests(processor_file.finish()))
    spans = JaegerSource(jaeger.url, DEFAULT_SERVICES, now=SCENARIO_NOW).find(Lookup.parse(job_id.upper())).spans
    assert {span.trace_id for span in spans} == {emitted.request_trace_id}
    searched = [json.loads(query["query.attributes"][0]) for query in jaeger.seen_queries]
    assert {ATTR_STITCHED_ORIGINAL_TRACE_ID: job_id} in searched, "tried as an attempt's original trace id"
    assert {ATTR_MESSAGING_MESSAGE_ID: job_id} in searched, "and as a job id"

"""The trail view on a real processor's file output and on a Jaeger-api_v3-shaped server, CLI included."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from jobtrail.conventions import (
    ATTR_REQUEST_ID,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    ATTR_STITCHED_PARENT_FROM_LINK,
)
from jobtrail.trail import FileSource, JaegerSource, Lookup, TrailNotFound
from jobtrail.trail.cli import DEFAULT_SERVICES, main
from jobtrail.trail.model import KIND_CONSUMER
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.trail.conftest import read_requests
from tests.trail.scenario import emit_action


@pytest.fixture
def stitched_file(processor_file):
    emitted = emit_action(processor_file.processor, failures=2)
    return processor_file.finish(), emitted


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
    assert "holds req_ffffffffffffffff" in capsys.readouterr().err
    assert main(["trail", "req_ffffffffffffffff", "--file", str(tmp_path / "absent.jsonl")]) == 2
    assert "no trace file at" in capsys.readouterr().err
    with pytest.raises(TrailNotFound):
        FileSource(str(path)).find(Lookup.parse("no-such-job"))


def test_jaeger_source_searches_with_canonical_parameters(stitched_file, jaeger_stub_factory, capsys) -> None:
    path, emitted = stitched_file
    jaeger = jaeger_stub_factory(read_requests(path))
    assert main(["trail", emitted.request_id, "--jaeger", jaeger.url, "--utc"]) == 0
    out = capsys.readouterr().out
    assert out.count("failed: SMTPAuthenticationError; retry scheduled") == 2
    query = jaeger.seen_queries[0]
    assert query["query.serviceName"] == query["query.service_name"] == [DEFAULT_SERVICES[0]]
    assert json.loads(query["query.attributes"][0]) == {ATTR_REQUEST_ID: emitted.request_id}
    assert query["query.startTimeMin"][0].endswith("Z") and query["query.startTimeMax"][0].endswith("Z")
    assert jaeger.deprecated_requests == [], "Jaeger reads the canonical names; the snake_case ones are fallbacks"


def test_jaeger_that_ignores_attributes_still_gives_only_the_matching_trail(
    processor_file, jaeger_stub_factory
) -> None:
    wanted = emit_action(processor_file.processor, request_id="req_00000000000000aa", job_id="job-1")
    other = emit_action(processor_file.processor, request_id="req_00000000000000bb", job_id="job-2")
    jaeger = jaeger_stub_factory(read_requests(processor_file.finish()), honours_attributes=False)
    spans = JaegerSource(jaeger.url, DEFAULT_SERVICES).find(Lookup.parse(wanted.request_id)).spans
    assert {span.trace_id for span in spans} == {wanted.request_trace_id}
    assert other.request_trace_id not in {span.trace_id for span in spans}


def test_jaeger_source_finds_a_stitched_attempt_by_its_original_trace_id(stitched_file, jaeger_stub_factory) -> None:
    path, emitted = stitched_file
    jaeger = jaeger_stub_factory(read_requests(path))
    source = JaegerSource(jaeger.url, DEFAULT_SERVICES)
    direct = source.find(Lookup.parse(emitted.request_trace_id)).spans
    via_original = source.find(Lookup.parse(emitted.attempt_trace_ids[0])).spans
    assert {span.span_id for span in via_original} == {span.span_id for span in direct}
    assert len(direct) == 13


def test_jaeger_source_gathers_an_unstitched_trail_across_services(jaeger_stub_factory) -> None:
    exporter = InMemorySpanExporter()
    emitted = emit_action(SimpleSpanProcessor(exporter), failures=1)
    jaeger = jaeger_stub_factory([encode_spans(exporter.get_finished_spans())])
    spans = JaegerSource(jaeger.url, DEFAULT_SERVICES).find(Lookup.parse(emitted.request_id)).spans
    assert {span.trace_id for span in spans} == {emitted.request_trace_id, *emitted.attempt_trace_ids}


def test_unreachable_jaeger_is_a_clear_error(capsys) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["trail", "req_0123456789abcdef", "--jaeger", f"http://127.0.0.1:{port}"]) == 2
    assert f"cannot reach Jaeger at http://127.0.0.1:{port}" in capsys.readouterr().err

"""The job.meta carrier alone: inject, extract, and the attempt record's checks (no Redis, no worker)."""

from __future__ import annotations

import math

import pytest
from jobtrail.conventions import JOB_META_ATTEMPTS_KEY, JOB_META_CARRIER_KEY, REQUEST_ID_BAGGAGE_KEY
from jobtrail.rq.carrier import (
    MAX_ATTEMPTS,
    AttemptRecord,
    MetaProblems,
    extract_creation_context,
    inject_creation_context,
)
from opentelemetry import baggage, context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

CREATOR = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def creator_context() -> context.Context:
    return baggage.set_baggage(
        REQUEST_ID_BAGGAGE_KEY, "req_0123456789abcdef", trace.set_span_in_context(NonRecordingSpan(CREATOR))
    )


def test_inject_writes_traceparent_and_baggage_once():
    meta: dict = {}
    inject_creation_context(meta, creator_context())
    assert meta[JOB_META_CARRIER_KEY]["traceparent"] == f"00-{CREATOR.trace_id:032x}-{CREATOR.span_id:016x}-01"
    assert "jobtrail.request.id=req_0123456789abcdef" in meta[JOB_META_CARRIER_KEY]["baggage"]
    first = dict(meta[JOB_META_CARRIER_KEY])
    inject_creation_context(meta, trace.set_span_in_context(NonRecordingSpan(SpanContext(9, 9, False))))
    assert meta[JOB_META_CARRIER_KEY] == first


def test_inject_writes_nothing_without_a_context():
    meta: dict = {}
    inject_creation_context(meta, context.Context())
    assert JOB_META_CARRIER_KEY not in meta


def test_extract_round_trips_span_context_and_baggage():
    meta: dict = {}
    inject_creation_context(meta, creator_context())
    problems = MetaProblems()
    extracted = extract_creation_context(meta, problems)
    assert not problems
    span_context = trace.get_current_span(extracted).get_span_context()
    assert (span_context.trace_id, span_context.span_id, span_context.is_remote) == (0x1234, 0x5678, True)
    assert baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY, extracted) == "req_0123456789abcdef"


@pytest.mark.parametrize(
    "carrier",
    [
        "00-x",
        {"traceparent": 1},
        {"traceparent": "00-zz-yy-01"},
        {str(n): "v" for n in range(40)},
        {"baggage": "x" * 9000},
    ],
)
def test_extract_ignores_unusable_carriers_and_says_why(carrier):
    problems = MetaProblems()
    assert extract_creation_context({JOB_META_CARRIER_KEY: carrier}, problems) is None
    assert len(problems.found) == 1 and JOB_META_CARRIER_KEY in str(problems)


def test_the_record_round_trips():
    record = AttemptRecord(3, CREATOR, True, "ValueError", "boom", 1_700_000_000.5)
    meta: dict = {}
    record.write(meta)
    problems = MetaProblems()
    read = AttemptRecord.read(meta, problems)
    assert not problems
    assert (read.attempts, read.final, read.first_error_type, read.first_error_message, read.runnable_at) == (
        3,
        True,
        "ValueError",
        "boom",
        1_700_000_000.5,
    )
    assert (read.last_span.trace_id, read.last_span.span_id, read.last_span.is_remote) == (0x1234, 0x5678, True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempts", MAX_ATTEMPTS + 1),
        ("attempts", True),
        ("attempts", 2.0),
        ("last_span", {"trace_id": "1" * 32, "span_id": "2" * 16, "flags": math.inf}),
        ("last_span", {"trace_id": "1" * 32 + "\n", "span_id": "2" * 16}),
        ("last_span", {"trace_id": "0" * 32, "span_id": "2" * 16}),
        ("last_span", {"trace_id": "1" * 32, "span_id": "2" * 16, "flags": 256}),
        ("final", "true"),
        ("first_error_type", 42),
        ("runnable_at", 10**400),
        ("runnable_at", -1e300),
        ("runnable_at", math.nan),
        ("runnable_at", 2.0**40),
    ],
)
def test_each_unusable_field_is_dropped_and_the_rest_kept(field, value):
    raw = {"attempts": 2, "first_error_message": "kept", "runnable_at": 1_700_000_000.0, field: value}
    problems = MetaProblems()
    read = AttemptRecord.read({JOB_META_ATTEMPTS_KEY: raw}, problems)
    assert problems.found == [f"{JOB_META_ATTEMPTS_KEY}.{field}: " + problems.found[0].split(": ", 1)[1]]
    assert read.first_error_message == "kept"
    assert read.attempts == (0 if field == "attempts" else 2)
    assert read.runnable_at == (None if field == "runnable_at" else 1_700_000_000.0)
    assert read.last_span is None and read.final is False


def test_long_error_texts_are_cut():
    read = AttemptRecord.read({JOB_META_ATTEMPTS_KEY: {"first_error_message": "x" * 5000}}, MetaProblems())
    assert len(read.first_error_message) == 1024

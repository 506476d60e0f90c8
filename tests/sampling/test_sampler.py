"""The sampler's decisions: roots by trace id ratio, linked attempt roots by their request, children by parent."""

from __future__ import annotations

import logging

import pytest
from jobtrail.conventions import ATTR_LINK_TYPE, LINK_TYPE_ENQUEUED_BY, LINK_TYPE_RETRY_OF
from jobtrail.sampling import (
    DEFAULT_RATIO,
    EnqueuedByLinkSampler,
    JobtrailParentBasedTraceIdRatio,
    jobtrail_parentbased_traceidratio,
    parse_ratio,
)
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision
from opentelemetry.trace import INVALID_SPAN_CONTEXT, Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

KEPT_BY_RATIO = 1  # low 64 bits below any positive bound
DROPPED_BY_RATIO = (1 << 64) - 1  # low 64 bits above the bound of any ratio below 1
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


def span_context(flags: TraceFlags, trace_id: int = 0xABC, span_id: int = 0xDEF, remote: bool = True) -> SpanContext:
    return SpanContext(trace_id=trace_id, span_id=span_id, is_remote=remote, trace_flags=flags)


def link(flags: TraceFlags, link_type: object = LINK_TYPE_ENQUEUED_BY) -> Link:
    return Link(span_context(flags), {ATTR_LINK_TYPE: link_type})


def with_parent(flags: TraceFlags, remote: bool = False) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(span_context(flags, remote=remote)))


def decide(sampler, trace_id: int, links=None, parent: Context | None = None) -> Decision:
    return sampler.should_sample(parent, trace_id, "process q", SpanKind.CONSUMER, {"a": 1}, links).decision


def test_a_root_with_no_link_is_sampled_by_trace_id_ratio():
    sampler = JobtrailParentBasedTraceIdRatio(0.5)
    assert decide(sampler, KEPT_BY_RATIO) is Decision.RECORD_AND_SAMPLE
    assert decide(sampler, DROPPED_BY_RATIO) is Decision.DROP
    assert decide(JobtrailParentBasedTraceIdRatio(0.0), KEPT_BY_RATIO) is Decision.DROP


def test_a_root_with_an_enqueued_by_link_follows_the_links_sampled_flag_not_its_trace_id():
    assert decide(JobtrailParentBasedTraceIdRatio(0.0), KEPT_BY_RATIO, [link(SAMPLED)]) is Decision.RECORD_AND_SAMPLE
    assert decide(JobtrailParentBasedTraceIdRatio(1.0), KEPT_BY_RATIO, [link(NOT_SAMPLED)]) is Decision.DROP


def test_a_sampled_linked_root_keeps_its_attributes_and_a_dropped_one_gets_none():
    sampler = JobtrailParentBasedTraceIdRatio(0.5)
    kept = sampler.should_sample(None, DROPPED_BY_RATIO, "process q", attributes={"a": 1}, links=[link(SAMPLED)])
    dropped = sampler.should_sample(None, KEPT_BY_RATIO, "process q", attributes={"a": 1}, links=[link(NOT_SAMPLED)])
    assert dict(kept.attributes) == {"a": 1}
    assert dict(dropped.attributes) == {}


def test_a_retry_attempt_follows_its_enqueued_by_link_whatever_the_retry_of_link_says():
    retry_of = link(NOT_SAMPLED, LINK_TYPE_RETRY_OF)
    sampler = JobtrailParentBasedTraceIdRatio(0.0)
    assert decide(sampler, KEPT_BY_RATIO, [link(SAMPLED), retry_of]) is Decision.RECORD_AND_SAMPLE
    assert decide(sampler, KEPT_BY_RATIO, [retry_of, link(SAMPLED)]) is Decision.RECORD_AND_SAMPLE


@pytest.mark.parametrize("remote", [True, False])
def test_a_span_with_a_parent_follows_the_parent_even_with_an_enqueued_by_link(remote):
    """The pickup marker and ``child`` propagation: children of a kept span are kept, of a dropped one dropped."""
    sampler = JobtrailParentBasedTraceIdRatio(0.5)
    sampled_parent, dropped_parent = with_parent(SAMPLED, remote), with_parent(NOT_SAMPLED, remote)
    assert decide(sampler, DROPPED_BY_RATIO, [link(NOT_SAMPLED)], sampled_parent) is Decision.RECORD_AND_SAMPLE
    assert decide(sampler, KEPT_BY_RATIO, [link(SAMPLED)], dropped_parent) is Decision.DROP


def test_a_root_whose_only_link_is_not_enqueued_by_is_sampled_by_ratio():
    sampler = JobtrailParentBasedTraceIdRatio(0.0)
    assert decide(sampler, KEPT_BY_RATIO, [link(SAMPLED, LINK_TYPE_RETRY_OF)]) is Decision.DROP
    assert decide(sampler, KEPT_BY_RATIO, [Link(span_context(SAMPLED))]) is Decision.DROP


class Exploding:
    """A link-like object whose every attribute raises."""

    @property
    def context(self):
        raise RuntimeError("boom")

    attributes = context


GARBAGE_LINKS = [
    pytest.param(None, id="none"),
    pytest.param(42, id="not-iterable"),
    pytest.param([None, 42, "link", b"x", {"context": 1}], id="not-links"),
    pytest.param([Exploding()], id="raising-link"),
    pytest.param([Link(INVALID_SPAN_CONTEXT, {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY})], id="invalid-context"),
    pytest.param(
        [Link(SpanContext(1 << 200, -5, True, SAMPLED), {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY})], id="out-of-range"
    ),
    pytest.param([Link(span_context(SAMPLED), None)], id="no-attributes"),
    pytest.param([link(SAMPLED, ["enqueued_by"])], id="type-not-a-string"),
    pytest.param([link(SAMPLED, 1)], id="type-an-int"),
    pytest.param(
        [Link(SpanContext(0xABC, 0xDEF, True, "sampled"), {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY})],  # type: ignore[arg-type]
        id="flags-not-flags",
    ),
]


@pytest.mark.parametrize("links", GARBAGE_LINKS)
def test_garbage_links_never_raise_and_fall_back_to_the_ratio(links):
    assert decide(JobtrailParentBasedTraceIdRatio(0.0), KEPT_BY_RATIO, links) is Decision.DROP
    assert decide(JobtrailParentBasedTraceIdRatio(1.0), KEPT_BY_RATIO, links) is Decision.RECORD_AND_SAMPLE


def test_links_given_as_any_iterable_are_read():
    links = (candidate for candidate in [link(SAMPLED)])
    assert decide(JobtrailParentBasedTraceIdRatio(0.0), KEPT_BY_RATIO, links) is Decision.RECORD_AND_SAMPLE


def test_the_first_valid_enqueued_by_link_decides():
    invalid = Link(INVALID_SPAN_CONTEXT, {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY})
    sampler = JobtrailParentBasedTraceIdRatio(1.0)
    assert decide(sampler, KEPT_BY_RATIO, [invalid, link(NOT_SAMPLED), link(SAMPLED)]) is Decision.DROP


def test_the_link_rule_composes_with_any_root_sampler():
    assert decide(EnqueuedByLinkSampler(ALWAYS_ON), KEPT_BY_RATIO, [link(NOT_SAMPLED)]) is Decision.DROP
    assert decide(EnqueuedByLinkSampler(ALWAYS_OFF), KEPT_BY_RATIO, [link(SAMPLED)]) is Decision.RECORD_AND_SAMPLE
    assert decide(EnqueuedByLinkSampler(ALWAYS_ON), KEPT_BY_RATIO) is Decision.RECORD_AND_SAMPLE


def test_descriptions_name_the_rate():
    assert JobtrailParentBasedTraceIdRatio(0.25).get_description() == "JobtrailParentBasedTraceIdRatio{0.25}"
    assert EnqueuedByLinkSampler(ALWAYS_OFF).get_description() == "EnqueuedByLink{AlwaysOffSampler}"


@pytest.mark.parametrize(("arg", "rate"), [("0.25", 0.25), (" 0.5\n", 0.5), ("0", 0.0), ("1", 1.0), (0.1, 0.1)])
def test_a_ratio_argument_is_used_as_is(arg, rate, caplog):
    caplog.set_level(logging.WARNING)
    assert jobtrail_parentbased_traceidratio(arg).rate == rate
    assert caplog.records == []


@pytest.mark.parametrize("arg", ["", None, "  ", "half", "1.5", "-0.1", "nan", "inf", "0,5", [0.5]])
def test_a_bad_argument_falls_back_to_the_sdks_default_with_one_warning(arg, caplog):
    caplog.set_level(logging.WARNING)
    sampler = jobtrail_parentbased_traceidratio(arg)
    assert sampler.rate == DEFAULT_RATIO == 1.0
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING
    assert "OTEL_TRACES_SAMPLER_ARG" in warning.getMessage() and repr(arg) in warning.getMessage()
    assert decide(sampler, DROPPED_BY_RATIO) is Decision.RECORD_AND_SAMPLE


def test_parse_ratio_accepts_the_bounds_and_nothing_beyond():
    assert (parse_ratio("0"), parse_ratio("1.0")) == (0.0, 1.0)
    assert parse_ratio("1.0000001") == DEFAULT_RATIO

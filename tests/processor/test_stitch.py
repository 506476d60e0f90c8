"""The pure stitching stage: ids, parents, attributes and links after stitching; holding; expiry; limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jobtrail.conventions import (
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    ATTR_STITCHED_PARENT_FROM_LINK,
    OPERATION_PROCESS,
)
from jobtrail.processor.config import STITCH_RULE_JOBTRAIL, STITCH_RULE_MESSAGING
from jobtrail.processor.decision_cache import DecisionCache
from jobtrail.processor.span_store import SpanStore
from jobtrail.processor.stitch import (
    REASON_HOLD_FULL,
    REASON_NO_JOB_LINK,
    REASON_SHUTDOWN,
    REASON_WINDOW_EXPIRED,
    Stitcher,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .builders import attempt_root, attributes_of, link, new_trace_id, request, span, spans_of

pytestmark = pytest.mark.usefixtures("both_stitch_paths")


def stitcher(
    rule: str = STITCH_RULE_JOBTRAIL,
    hold: float = 2.0,
    ttl: float = 600.0,
    max_held: int = 1000,
    max_held_bytes: int = 1 << 30,
) -> Stitcher:
    return Stitcher(SpanStore(hold, max_held, max_held_bytes), DecisionCache(ttl, 10_000), rule)


def by_name(spans: list[Span]) -> dict[str, Span]:
    return {s.name: s for s in spans}


def test_attempt_trace_moves_into_the_enqueuing_trace() -> None:
    enqueue = span("send default", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    root = attempt_root(enqueue)
    child = span("job work", root.trace_id, root.span_id)
    original_trace = root.trace_id
    original_links = list(root.links)

    result = stitcher().process(request(child, root), now=0.0)

    out = by_name(spans_of(result.request))
    assert result.stitched == 2 and result.modified and result.spans_out == 2
    assert out["process default"].trace_id == enqueue.trace_id
    assert out["process default"].parent_span_id == enqueue.span_id
    assert out["process default"].span_id == root.span_id
    assert attributes_of(out["process default"])[ATTR_STITCHED_ORIGINAL_TRACE_ID] == original_trace.hex()
    assert attributes_of(out["process default"])[ATTR_STITCHED_PARENT_FROM_LINK] is True
    assert list(out["process default"].links) == original_links
    assert out["job work"].trace_id == enqueue.trace_id
    assert out["job work"].parent_span_id == root.span_id
    assert attributes_of(out["job work"])[ATTR_STITCHED_ORIGINAL_TRACE_ID] == original_trace.hex()
    assert ATTR_STITCHED_PARENT_FROM_LINK not in attributes_of(out["job work"])


def test_children_before_their_root_are_held_then_stitched_with_it() -> None:
    enqueue = span("send default", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    root = attempt_root(enqueue)
    grandchild_parent = span("job work", root.trace_id, root.span_id)
    grandchild = span("redis GET", root.trace_id, grandchild_parent.span_id)
    subject = stitcher()

    first = subject.process(request(grandchild, grandchild_parent, service="worker-a"), now=0.0)
    assert first.spans_out == 0 and spans_of(first.request) == []
    assert subject.spans.held_spans == 2

    second = subject.process(request(root, service="worker-b"), now=1.0)
    out = by_name(spans_of(second.request))
    assert set(out) == {"process default", "job work", "redis GET"}
    assert {s.trace_id for s in out.values()} == {enqueue.trace_id}
    assert out["redis GET"].parent_span_id == grandchild_parent.span_id
    assert out["job work"].parent_span_id == root.span_id
    assert second.stitched == 3 and subject.spans.held_spans == 0
    services = {
        s.name: rs.resource.attributes[0].value.string_value
        for rs in second.request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    }
    assert services == {"process default": "worker-b", "job work": "worker-a", "redis GET": "worker-a"}


def test_late_children_follow_the_remembered_mapping_at_once() -> None:
    enqueue = span("send default", new_trace_id())
    root = attempt_root(enqueue)
    subject = stitcher()
    subject.process(request(root), now=0.0)

    late = subject.process(request(span("late child", root.trace_id, root.span_id)), now=30.0)

    (moved,) = spans_of(late.request)
    assert moved.trace_id == enqueue.trace_id and late.stitched == 1
    assert subject.spans.held_spans == 0


def nested_jobs() -> tuple[Span, Span, Span, Span, Span]:
    """A request enqueues job A; A's attempt enqueues job B (a job that enqueues a job)."""
    request_root = span("POST /reports", new_trace_id(), kind=Span.SPAN_KIND_SERVER)
    enqueue_a = span("send default", request_root.trace_id, request_root.span_id, kind=Span.SPAN_KIND_PRODUCER)
    attempt_a = attempt_root(enqueue_a)
    enqueue_b = span("send default", attempt_a.trace_id, attempt_a.span_id, kind=Span.SPAN_KIND_PRODUCER)
    attempt_b = attempt_root(enqueue_b)
    return request_root, enqueue_a, attempt_a, enqueue_b, attempt_b


def test_a_job_enqueued_by_a_job_ends_up_in_the_request_trace() -> None:
    request_root, enqueue_a, attempt_a, enqueue_b, attempt_b = nested_jobs()
    child_b = span("job b work", attempt_b.trace_id, attempt_b.span_id)
    subject = stitcher()
    subject.process(request(enqueue_a, request_root), now=0.0)
    first = subject.process(request(enqueue_b, attempt_a), now=1.0)

    second = subject.process(request(child_b, attempt_b), now=2.0)

    out = {s.span_id: s for s in spans_of(first.request) + spans_of(second.request)}
    assert len(out) == 4 and {s.trace_id for s in out.values()} == {request_root.trace_id}
    assert out[attempt_a.span_id].parent_span_id == enqueue_a.span_id
    assert out[enqueue_b.span_id].parent_span_id == attempt_a.span_id
    assert out[attempt_b.span_id].parent_span_id == enqueue_b.span_id, "B hangs under its enqueue span"
    assert out[child_b.span_id].parent_span_id == attempt_b.span_id
    assert attributes_of(out[attempt_b.span_id])[ATTR_STITCHED_ORIGINAL_TRACE_ID] == attempt_b.trace_id.hex()
    assert [lk.trace_id for lk in out[attempt_b.span_id].links] == [attempt_a.trace_id], "links are kept as sent"


def test_nested_jobs_in_one_request_in_any_order_resolve_to_the_request_trace() -> None:
    request_root, enqueue_a, attempt_a, enqueue_b, attempt_b = nested_jobs()
    subject = stitcher()
    subject.process(request(enqueue_a, request_root), now=0.0)

    result = subject.process(request(attempt_b, enqueue_b, attempt_a), now=1.0)

    assert {s.trace_id for s in spans_of(result.request)} == {request_root.trace_id}


def test_a_link_cycle_from_hostile_input_ends() -> None:
    one, two = new_trace_id(), new_trace_id()
    a = span("a", one, links=[link(two, b"\x01" * 8)])
    b = span("b", two, links=[link(one, b"\x02" * 8)])

    result = stitcher().process(request(a, b), now=0.0)

    assert result.spans_out == 2 and result.stitched == 2
    assert {s.name: s.trace_id for s in spans_of(result.request)} == {"a": two, "b": one}


def test_trace_without_job_links_passes_through_untouched() -> None:
    root = span("GET /", new_trace_id())
    child = span("SELECT", root.trace_id, root.span_id)
    incoming = request(child, root)
    before = incoming.SerializeToString()

    result = stitcher().process(incoming, now=0.0)

    assert not result.modified
    assert result.request.SerializeToString() == before
    assert result.unchanged == {REASON_NO_JOB_LINK: 2}


def test_plain_children_held_until_their_root_come_out_unchanged() -> None:
    root = span("GET /", new_trace_id())
    child = span("SELECT", root.trace_id, root.span_id)
    child_bytes = child.SerializeToString()
    subject = stitcher()

    assert subject.process(request(child), now=0.0).spans_out == 0
    result = subject.process(request(root), now=0.5)

    out = by_name(spans_of(result.request))
    assert out["SELECT"].SerializeToString() == child_bytes
    assert result.unchanged == {REASON_NO_JOB_LINK: 2} and result.stitched == 0


def test_hold_window_end_forwards_unchanged_and_counts_it() -> None:
    orphan = span("job work", new_trace_id(), b"\x01" * 8)
    orphan_bytes = orphan.SerializeToString()
    subject = stitcher(hold=2.0)
    subject.process(request(orphan), now=10.0)

    assert subject.expire(now=11.9).spans_out == 0
    expired = subject.expire(now=12.0)

    (out,) = spans_of(expired.request)
    assert out.SerializeToString() == orphan_bytes
    assert expired.unchanged == {REASON_WINDOW_EXPIRED: 1}
    assert subject.spans.held_spans == 0


def test_retry_after_the_mapping_expired_is_stitched_from_its_own_link() -> None:
    enqueue = span("send default", new_trace_id())
    first_attempt = attempt_root(enqueue)
    subject = stitcher(ttl=60.0)
    subject.process(request(first_attempt), now=0.0)
    subject.expire(now=120.0)
    assert len(subject.decisions) == 0

    retry = attempt_root(enqueue, previous_attempt=first_attempt)
    retry_child = span("job work", retry.trace_id, retry.span_id)
    assert subject.process(request(retry_child), now=120.0).spans_out == 0
    result = subject.process(request(retry), now=120.5)

    out = by_name(spans_of(result.request))
    assert out["process default"].trace_id == enqueue.trace_id
    assert out["process default"].parent_span_id == enqueue.span_id
    assert out["job work"].trace_id == enqueue.trace_id
    assert [lk.trace_id for lk in out["process default"].links] == [enqueue.trace_id, first_attempt.trace_id]


def test_full_hold_store_forwards_the_oldest_trace_unchanged() -> None:
    subject = stitcher(max_held=3)
    oldest = new_trace_id()
    newer = new_trace_id()
    subject.process(request(span("a1", oldest, b"\x01" * 8), span("a2", oldest, b"\x01" * 8)), now=0.0)

    result = subject.process(request(span("b1", newer, b"\x02" * 8), span("b2", newer, b"\x02" * 8)), now=0.1)

    assert sorted(s.name for s in spans_of(result.request)) == ["a1", "a2"]
    assert result.unchanged == {REASON_HOLD_FULL: 2}
    assert subject.spans.held_spans == 2


def test_held_bytes_bound_forwards_the_oldest_trace_unchanged() -> None:
    oldest, newer = new_trace_id(), new_trace_id()
    first = [span("a1", oldest, b"\x01" * 8), span("a2", oldest, b"\x01" * 8)]
    second = [span("b1", newer, b"\x02" * 8), span("b2", newer, b"\x02" * 8)]
    probe = stitcher()
    probe.process(request(*first), now=0.0)
    one_trace = probe.spans.held_bytes
    assert one_trace > sum(len(s.SerializeToString()) for s in first), "resource, scope and bookkeeping count too"
    subject = stitcher(max_held=1000, max_held_bytes=one_trace + 10)
    subject.process(request(*first), now=0.0)
    assert subject.spans.held_bytes == one_trace

    result = subject.process(request(*second), now=0.1)

    assert sorted(s.name for s in spans_of(result.request)) == ["a1", "a2"]
    assert result.unchanged == {REASON_HOLD_FULL: 2}
    assert subject.spans.held_spans == 2 and subject.spans.held_traces == 1


def test_a_trace_bigger_than_the_whole_store_goes_out_unchanged_at_once() -> None:
    trace_id = new_trace_id()
    family = [span(f"c{i}", trace_id, b"\x03" * 8) for i in range(4)]
    subject = stitcher(max_held=3)

    result = subject.process(request(*family), now=0.0)

    assert len(spans_of(result.request)) == 4 and result.unchanged == {REASON_HOLD_FULL: 4}
    assert subject.spans.held_spans == 0 and subject.spans.held_bytes == 0


def test_spans_with_invalid_ids_are_rejected_and_the_rest_kept() -> None:
    good = span("good", new_trace_id())
    bad = span("bad", b"\x01" * 15)

    result = stitcher().process(request(good, bad), now=0.0)

    assert [s.name for s in spans_of(result.request)] == ["good"]
    assert result.rejected == 1 and "16 bytes" in result.rejected_reason


def test_generic_messaging_rule_picks_consumer_process_spans_with_one_link() -> None:
    producer = span("publish", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    consumer = span(
        "process tasks",
        new_trace_id(),
        kind=Span.SPAN_KIND_CONSUMER,
        links=[Span.Link(trace_id=producer.trace_id, span_id=producer.span_id)],
        attributes={ATTR_MESSAGING_OPERATION_TYPE: OPERATION_PROCESS},
    )

    untouched = stitcher(STITCH_RULE_JOBTRAIL).process(request(consumer), now=0.0)
    stitched = stitcher(STITCH_RULE_MESSAGING).process(request(consumer), now=0.0)

    assert spans_of(untouched.request)[0].trace_id == consumer.trace_id
    assert spans_of(stitched.request)[0].trace_id == producer.trace_id
    assert spans_of(stitched.request)[0].parent_span_id == producer.span_id


def test_generic_rule_also_reads_the_pre_1_26_operation_attribute() -> None:
    """Ruby's Sidekiq instrumentation (propagation_style: :link) still sends ``messaging.operation``."""
    producer = span("default publish", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    sidekiq = span(
        "default process",
        new_trace_id(),
        kind=Span.SPAN_KIND_CONSUMER,
        links=[Span.Link(trace_id=producer.trace_id, span_id=producer.span_id)],
        attributes={"messaging.system": "sidekiq", "messaging.operation": OPERATION_PROCESS},
    )
    publish = span("publish", new_trace_id(), kind=Span.SPAN_KIND_CONSUMER, attributes={"messaging.operation": "x"})
    publish.links.add(trace_id=producer.trace_id, span_id=producer.span_id)

    result = stitcher(STITCH_RULE_MESSAGING).process(request(sidekiq, publish), now=0.0)

    out = by_name(spans_of(result.request))
    assert out["default process"].trace_id == producer.trace_id
    assert out["publish"].trace_id == publish.trace_id


def test_generic_rule_needs_exactly_one_link_and_keeps_an_existing_parent() -> None:
    producer = span("publish", new_trace_id())
    other = span("other", new_trace_id())
    poll = span("poll", new_trace_id())
    two_links = span(
        "process two",
        new_trace_id(),
        kind=Span.SPAN_KIND_CONSUMER,
        links=[Span.Link(trace_id=t.trace_id, span_id=t.span_id) for t in (producer, other)],
        attributes={ATTR_MESSAGING_OPERATION_TYPE: OPERATION_PROCESS},
    )
    with_parent = span(
        "process child",
        poll.trace_id,
        poll.span_id,
        kind=Span.SPAN_KIND_CONSUMER,
        links=[Span.Link(trace_id=producer.trace_id, span_id=producer.span_id)],
        attributes={ATTR_MESSAGING_OPERATION_TYPE: OPERATION_PROCESS},
    )

    subject = stitcher(STITCH_RULE_MESSAGING)
    result = subject.process(request(two_links, with_parent), now=0.0)
    later = subject.process(request(poll), now=1.0)

    out = by_name(spans_of(result.request) + spans_of(later.request))
    assert out["process two"].trace_id == two_links.trace_id
    assert out["process child"].trace_id == producer.trace_id
    assert out["process child"].parent_span_id == poll.span_id
    assert ATTR_STITCHED_PARENT_FROM_LINK not in attributes_of(out["process child"])
    assert out["poll"].trace_id == producer.trace_id, "the worker's own root follows the attempt it contains"
    assert out["poll"].parent_span_id == producer.span_id
    assert attributes_of(out["poll"])[ATTR_STITCHED_PARENT_FROM_LINK] is True


def test_an_already_stitched_root_is_left_alone() -> None:
    enqueue = span("send default", new_trace_id())
    root = span("process default", enqueue.trace_id, enqueue.span_id, links=[link(enqueue.trace_id, enqueue.span_id)])

    result = stitcher().process(request(enqueue, root), now=0.0)

    assert result.stitched == 0 and not result.modified
    assert result.unchanged == {REASON_NO_JOB_LINK: 2}


def test_drain_forwards_everything_held_unchanged() -> None:
    subject = stitcher()
    subject.process(request(span("x", new_trace_id(), b"\x01" * 8), span("y", new_trace_id(), b"\x02" * 8)), 0.0)

    drained = subject.drain()

    assert sorted(s.name for s in spans_of(drained.request)) == ["x", "y"]
    assert drained.unchanged == {REASON_SHUTDOWN: 2} and subject.spans.held_spans == 0


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=1, max_size=6),
    batch_size=st.integers(1, 5),
    order_seed=st.randoms(use_true_random=False),
)
def test_every_span_comes_out_exactly_once_in_the_right_trace(plan, batch_size, order_seed) -> None:
    """Any mix of job attempts and plain traces, in any order and batching: nothing lost, nothing doubled."""
    enqueue = span("send default", new_trace_id())
    expected_trace: dict[bytes, bytes] = {}
    spans: list[Span] = []
    for is_job, children in plan:
        root = attempt_root(enqueue) if is_job else span("plain root", new_trace_id())
        family = [root] + [span(f"child {i}", root.trace_id, root.span_id) for i in range(children)]
        for member in family:
            expected_trace[member.span_id] = enqueue.trace_id if is_job else root.trace_id
        spans.extend(family)
    order_seed.shuffle(spans)
    subject = stitcher()
    out: list[Span] = []
    totals = {"stitched": 0, "unchanged": 0}
    for start in range(0, len(spans), batch_size):
        result = subject.process(request(*spans[start : start + batch_size]), now=float(start))
        out.extend(spans_of(result.request))
        totals["stitched"] += result.stitched
        totals["unchanged"] += sum(result.unchanged.values())
    drained = subject.drain()
    out.extend(spans_of(drained.request))
    totals["unchanged"] += sum(drained.unchanged.values())

    assert sorted(s.span_id for s in out) == sorted(expected_trace)
    assert {s.span_id: s.trace_id for s in out} == expected_trace
    assert totals["stitched"] + totals["unchanged"] == len(spans)
    assert subject.spans.held_spans == subject.spans.held_bytes == subject.spans.held_traces == 0


def test_a_span_with_invalid_ids_decides_nothing() -> None:
    """Ids are validated before any decision: a rejected span's ``enqueued_by`` link must not move its trace."""
    enqueue = span("send default", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    bad_root = attempt_root(enqueue)
    bad_root.span_id = b"\x05" * 7
    subject = stitcher()

    result = subject.process(request(bad_root), now=0.0)

    assert result.rejected == 1 and "got 16, 7 and 0" in result.rejected_reason
    assert spans_of(result.request) == [] and len(subject.decisions) == 0
    later = subject.process(request(span("job work", bad_root.trace_id, b"\x05" * 8)), now=1.0)
    assert later.spans_out == 0 and subject.spans.held_spans == 1, "its trace is still undecided"


def pickup_marker(attempt: Span, enqueue: Span) -> Span:
    """The RQ pickup marker: zero duration, INTERNAL, child of the attempt span, same ``enqueued_by`` link."""
    return span("pickup default", attempt.trace_id, attempt.span_id, links=[link(enqueue.trace_id, enqueue.span_id)])


def test_the_pickup_marker_decides_a_long_attempt_long_before_it_ends() -> None:
    enqueue = span("send default", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    attempt = attempt_root(enqueue)
    marker = pickup_marker(attempt, enqueue)
    step = span("step", attempt.trace_id, attempt.span_id)
    subject = stitcher(hold=2.0, ttl=60.0)

    out = spans_of(subject.process(request(step, marker), now=0.0).request)
    for now in range(30, 630, 30):  # a ten-minute job exporting a step every 30 s, with a 60 s decision TTL
        assert spans_of(subject.expire(float(now)).request) == []
        out += spans_of(subject.process(request(span("step", attempt.trace_id, attempt.span_id)), now).request)
    out += spans_of(subject.process(request(attempt), now=660.0).request)

    assert len(out) == 23 and {s.trace_id for s in out} == {enqueue.trace_id}
    moved = by_name(out)
    assert moved["pickup default"].parent_span_id == attempt.span_id
    assert ATTR_STITCHED_PARENT_FROM_LINK not in attributes_of(moved["pickup default"])
    assert moved["process default"].parent_span_id == enqueue.span_id
    assert attributes_of(moved["process default"])[ATTR_STITCHED_PARENT_FROM_LINK] is True
    assert subject.spans.held_spans == 0


def test_spans_before_the_marker_in_the_same_request_follow_it() -> None:
    enqueue = span("send default", new_trace_id())
    attempt = attempt_root(enqueue)
    steps = [span(f"step {i}", attempt.trace_id, attempt.span_id) for i in range(3)]

    incoming = request(*steps, pickup_marker(attempt, enqueue), span("GET /", new_trace_id()))
    raw = incoming.SerializeToString()

    result = stitcher().process(incoming, now=0.0, raw=raw)

    assert result.stitched == 4 and result.unchanged == {REASON_NO_JOB_LINK: 1}
    assert {s.trace_id for s in spans_of(result.request) if s.name != "GET /"} == {enqueue.trace_id}


def celery_run(parent_context: Span, name: str = "run/tasks.flaky") -> Span:
    """What opentelemetry-instrumentation-celery emits with ``use_span_links=True``: a new root, CONSUMER, one
    link without attributes, ``celery.action=run``, no ``messaging.operation.type``."""
    return span(
        name,
        new_trace_id(),
        kind=Span.SPAN_KIND_CONSUMER,
        links=[Span.Link(trace_id=parent_context.trace_id, span_id=parent_context.span_id)],
        attributes={"celery.action": "run", "celery.task_name": "tasks.flaky", "messaging.message.id": "t-1"},
    )


def celery_retry_chain() -> tuple[Span, Span, Span, Span, Span, Span, Span]:
    """A request that sends a task retried twice: (request root, publish, run 1, re-publish 1, run 2, re-publish 2,
    run 3); each re-publish is a child of the run that retried, each run links to the publish before it."""
    request_root = span("POST /work", new_trace_id(), kind=Span.SPAN_KIND_SERVER)
    publish = span("apply_async/tasks.flaky", request_root.trace_id, request_root.span_id, kind=Span.SPAN_KIND_PRODUCER)
    first = celery_run(publish)
    republish_1 = span("apply_async/tasks.flaky", first.trace_id, first.span_id, kind=Span.SPAN_KIND_PRODUCER)
    second = celery_run(republish_1)
    republish_2 = span("apply_async/tasks.flaky", second.trace_id, second.span_id, kind=Span.SPAN_KIND_PRODUCER)
    return request_root, publish, first, republish_1, second, republish_2, celery_run(republish_2)


def test_celery_retries_follow_the_chain_into_the_request_trace() -> None:
    """Each retry links to the ``apply_async`` span inside the previous attempt's trace: one trace in the end."""
    request_root, publish, first, republish_1, second, republish_2, third = celery_retry_chain()
    subject = stitcher(STITCH_RULE_MESSAGING)

    out = []
    for batch in ((publish, request_root), (republish_1, first), (republish_2, second), (third,)):
        out += spans_of(subject.process(request(*batch), now=0.0).request)

    assert len(out) == 7 and {s.trace_id for s in out} == {request_root.trace_id}
    moved = {s.span_id: s for s in out}
    assert moved[second.span_id].parent_span_id == republish_1.span_id
    assert moved[third.span_id].parent_span_id == republish_2.span_id
    untouched = stitcher(STITCH_RULE_JOBTRAIL).process(request(first), now=0.0)
    assert spans_of(untouched.request)[0].trace_id == first.trace_id, "the default rule leaves Celery alone"


def test_the_messaging_rule_leaves_a_linked_server_root_and_batch_consumers_alone() -> None:
    producer = span("publish", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    other = span("publish", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    one_link = [Span.Link(trace_id=producer.trace_id, span_id=producer.span_id)]
    two_links = one_link + [Span.Link(trace_id=other.trace_id, span_id=other.span_id)]
    server = span(
        "GET /", new_trace_id(), kind=Span.SPAN_KIND_SERVER, links=one_link, attributes={"celery.action": "run"}
    )
    batch = span(
        "process batch",
        new_trace_id(),
        kind=Span.SPAN_KIND_CONSUMER,
        links=two_links,
        attributes={ATTR_MESSAGING_OPERATION_TYPE: OPERATION_PROCESS},
    )
    celery_batch = span(
        "run/tasks.many",
        new_trace_id(),
        kind=Span.SPAN_KIND_CONSUMER,
        links=two_links,
        attributes={"celery.action": "run"},
    )
    incoming = request(server, batch, celery_batch)
    before = incoming.SerializeToString()

    result = stitcher(STITCH_RULE_MESSAGING).process(incoming, now=0.0)

    assert not result.modified and result.request.SerializeToString() == before
    assert result.unchanged == {REASON_NO_JOB_LINK: 3}


def test_links_to_invalid_contexts_never_move_a_trace() -> None:
    """Garbage in a marker's or attempt's link (zero ids, wrong lengths, its own trace) decides nothing."""
    trace_id = new_trace_id()
    attempt_id = b"\x09" * 8
    garbage = [
        link(bytes(16), b"\x01" * 8),
        link(new_trace_id(), bytes(8)),
        link(new_trace_id(), b"\x01" * 7),
        link(b"\x01" * 15, b"\x01" * 8),
        link(trace_id, b"\x01" * 8),
    ]
    markers = [span(f"pickup {n}", trace_id, attempt_id, links=[bad]) for n, bad in enumerate(garbage)]
    subject = stitcher()

    result = subject.process(request(*markers), now=0.0)

    assert result.spans_out == 0 and subject.spans.held_spans == len(garbage), "undecided: they wait"
    assert len(subject.decisions) == 0
    expired = subject.expire(now=10.0)
    assert {s.trace_id for s in spans_of(expired.request)} == {trace_id}
    assert expired.unchanged == {REASON_WINDOW_EXPIRED: len(garbage)}


def test_celery_retries_exported_before_the_attempt_that_sent_them_wait_for_it() -> None:
    """Pool processes export on their own timers: attempt 3, then 2, may arrive before attempt 1."""
    request_root, publish, first, republish_1, second, republish_2, third = celery_retry_chain()
    subject = stitcher(STITCH_RULE_MESSAGING)

    out = spans_of(subject.process(request(publish, request_root), now=0.0).request)
    assert spans_of(subject.process(request(third), now=0.1).request) == []
    assert spans_of(subject.process(request(republish_2, second), now=0.2).request) == []
    assert subject.spans.held_spans == 3
    last = subject.process(request(republish_1, first), now=0.3)
    out += spans_of(last.request)

    assert len(out) == 7 and {s.trace_id for s in out} == {request_root.trace_id}
    assert last.stitched == 5 and subject.spans.held_spans == 0
    assert {s.span_id: s.parent_span_id for s in out}[third.span_id] == republish_2.span_id


def test_a_celery_retry_waiting_for_an_attempt_decided_in_the_same_request_follows_it() -> None:
    """Attempt 2 waits for attempt 1; attempt 3 comes in the request that decides attempt 1 (so attempt 2 too):
    attempt 3 must follow attempt 2 into the request trace, not wait for a decision already made."""
    request_root, publish, first, republish_1, second, republish_2, third = celery_retry_chain()
    subject = stitcher(STITCH_RULE_MESSAGING)

    out = spans_of(subject.process(request(publish, request_root), now=0.0).request)
    assert spans_of(subject.process(request(republish_2), now=0.1).request) == []
    assert spans_of(subject.process(request(second, republish_1), now=0.2).request) == []
    last = subject.process(request(third, first), now=0.3)
    out += spans_of(last.request)

    assert len(out) == 7 and {s.trace_id for s in out} == {request_root.trace_id}
    assert last.stitched == 5 and subject.spans.held_spans == 0
    assert {s.span_id: s.parent_span_id for s in out}[third.span_id] == republish_2.span_id
    assert spans_of(subject.expire(now=10.0).request) == []


def test_a_waiting_celery_attempt_goes_where_its_link_points_when_the_window_ends() -> None:
    previous_attempt = span("run/tasks.flaky", new_trace_id(), kind=Span.SPAN_KIND_CONSUMER)
    republish = span("apply_async/tasks.flaky", previous_attempt.trace_id, previous_attempt.span_id)
    attempt = celery_run(republish)
    child = span("SELECT", attempt.trace_id, attempt.span_id)
    subject = stitcher(STITCH_RULE_MESSAGING, hold=2.0)
    assert subject.process(request(child, attempt), now=0.0).spans_out == 0

    expired = subject.expire(now=2.0)

    assert {s.trace_id for s in spans_of(expired.request)} == {previous_attempt.trace_id}
    assert expired.stitched == 2 and expired.unchanged == {}
    late = subject.process(request(span("late", attempt.trace_id, attempt.span_id)), now=3.0)
    assert spans_of(late.request)[0].trace_id == previous_attempt.trace_id, "the decision is remembered"

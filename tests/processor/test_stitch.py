"""The pure stitching stage: ids, parents, attributes and links after stitching; holding; expiry; limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from jobtrail.conventions import (
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    ATTR_STITCHED_PARENT_FROM_LINK,
    OPERATION_PROCESS,
)
from jobtrail.processor.config import STITCH_RULE_JOBTRAIL, STITCH_RULE_MESSAGING
from jobtrail.processor.hold import HELD_SPAN_OVERHEAD_BYTES, HoldStore
from jobtrail.processor.stitch import (
    REASON_HOLD_FULL,
    REASON_NO_JOB_LINK,
    REASON_SHUTDOWN,
    REASON_WINDOW_EXPIRED,
    Stitcher,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .builders import attempt_root, attributes_of, link, new_trace_id, request, span, spans_of


def stitcher(
    rule: str = STITCH_RULE_JOBTRAIL,
    hold: float = 2.0,
    ttl: float = 600.0,
    max_held: int = 1000,
    max_held_bytes: int = 1 << 30,
) -> Stitcher:
    return Stitcher(HoldStore(hold, ttl, max_held, 10_000, max_held_bytes=max_held_bytes), rule)


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
    assert subject.store.held_spans == 2

    second = subject.process(request(root, service="worker-b"), now=1.0)
    out = by_name(spans_of(second.request))
    assert set(out) == {"process default", "job work", "redis GET"}
    assert {s.trace_id for s in out.values()} == {enqueue.trace_id}
    assert out["redis GET"].parent_span_id == grandchild_parent.span_id
    assert out["job work"].parent_span_id == root.span_id
    assert second.stitched == 3 and subject.store.held_spans == 0
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
    assert subject.store.held_spans == 0


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
    assert subject.store.held_spans == 0


def test_retry_after_the_mapping_expired_is_stitched_from_its_own_link() -> None:
    enqueue = span("send default", new_trace_id())
    first_attempt = attempt_root(enqueue)
    subject = stitcher(ttl=60.0)
    subject.process(request(first_attempt), now=0.0)
    subject.expire(now=120.0)
    assert subject.store.mapping_count == 0

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
    assert subject.store.held_spans == 2


def test_held_bytes_bound_forwards_the_oldest_trace_unchanged() -> None:
    oldest, newer = new_trace_id(), new_trace_id()
    first = [span("a1", oldest, b"\x01" * 8), span("a2", oldest, b"\x01" * 8)]
    second = [span("b1", newer, b"\x02" * 8), span("b2", newer, b"\x02" * 8)]
    two_spans = sum(len(s.SerializeToString()) + HELD_SPAN_OVERHEAD_BYTES for s in first)
    subject = stitcher(max_held=1000, max_held_bytes=two_spans + 10)
    subject.process(request(*first), now=0.0)
    assert subject.store.held_bytes == two_spans

    result = subject.process(request(*second), now=0.1)

    assert sorted(s.name for s in spans_of(result.request)) == ["a1", "a2"]
    assert result.unchanged == {REASON_HOLD_FULL: 2}
    assert subject.store.held_spans == 2 and subject.store.held_traces == 1


def test_a_trace_bigger_than_the_whole_store_goes_out_unchanged_at_once() -> None:
    trace_id = new_trace_id()
    family = [span(f"c{i}", trace_id, b"\x03" * 8) for i in range(4)]
    subject = stitcher(max_held=3)

    result = subject.process(request(*family), now=0.0)

    assert len(spans_of(result.request)) == 4 and result.unchanged == {REASON_HOLD_FULL: 4}
    assert subject.store.held_spans == 0 and subject.store.held_bytes == 0


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
    assert drained.unchanged == {REASON_SHUTDOWN: 2} and subject.store.held_spans == 0


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
    assert subject.store.held_spans == subject.store.held_bytes == subject.store.held_traces == 0

"""The deciding stage: which spans move into which trace. Pure: a request and a clock value in, a result out.

An *attempt root* is a span whose link says the job was enqueued by another trace (the jobtrail marker, or
with the ``messaging`` rule any CONSUMER ``process`` span with exactly one link). Its whole trace moves into
the link's trace: ``trace_id := link.trace_id``, a parentless span gets ``parent_span_id := link.span_id``.
Spans of a trace whose root has not been seen are held (see :mod:`jobtrail.processor.hold`) until the root
shows up, the window ends or room runs out; the last two forward them unchanged and say so in the counts.

Everything touches protobuf fields directly (ids are ``bytes``, attributes are appended as prebuilt
``KeyValue`` messages): per-span Python object conversion would cost more than the rest of the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from jobtrail.conventions import (
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    ATTR_STITCHED_PARENT_FROM_LINK,
    LINK_TYPE_ENQUEUED_BY,
    OPERATION_PROCESS,
)
from jobtrail.processor.config import STITCH_RULE_MESSAGING
from jobtrail.processor.hold import PASS_THROUGH, Fragment, HoldStore, TraceMapping, fragment_cost
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_OPERATION as DEPRECATED_MESSAGING_OPERATION,
)

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
_INVALID_TRACE_ID = bytes(TRACE_ID_BYTES)
_PARENT_ID_LENGTHS = (0, SPAN_ID_BYTES)
_PARENT_FROM_LINK = KeyValue(key=ATTR_STITCHED_PARENT_FROM_LINK, value=AnyValue(bool_value=True))

REASON_NO_JOB_LINK = "no_job_link"
REASON_WINDOW_EXPIRED = "window_expired"
REASON_HOLD_FULL = "hold_full"
REASON_SHUTDOWN = "shutdown"
UNCHANGED_REASONS = (REASON_NO_JOB_LINK, REASON_WINDOW_EXPIRED, REASON_HOLD_FULL, REASON_SHUTDOWN)


@dataclass
class StitchResult:
    """What to forward now and what happened to every span that came in (the pipeline turns it into counters).

    ``modified`` False means ``request`` is exactly what came in, so its original bytes may be forwarded.
    """

    request: ExportTraceServiceRequest
    modified: bool = False
    spans_out: int = 0
    stitched: int = 0
    unchanged: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    rejected_reason: str = ""

    def count_unchanged(self, reason: str, spans: int) -> None:
        if spans:
            self.unchanged[reason] = self.unchanged.get(reason, 0) + spans


class Stitcher:
    """Moves linked job attempt traces into the trace that enqueued them, holding spans that came too early."""

    def __init__(self, store: HoldStore, rule: str) -> None:
        self.store = store
        self._generic_messaging_rule = rule == STITCH_RULE_MESSAGING

    # --- the consume path ----------------------------------------------------------------------
    def process(self, request: ExportTraceServiceRequest, now: float) -> StitchResult:
        """Stitch ``request`` in place; spans to hold are taken out, spans released by its roots appended."""
        result = StitchResult(request)
        store = self.store
        undecided = _UNDECIDED
        moves, released = self._decide_roots(request, now)
        to_hold: dict[bytes, list[Fragment]] = {}
        passed_through = stitched = 0
        for resource_spans in request.resource_spans:
            resource_shell = b""
            for scope_spans in resource_spans.scope_spans:
                scope_shell = b""
                taken_out: list[int] = []
                for index, span in enumerate(scope_spans.spans):
                    trace_id = span.trace_id
                    if (
                        len(trace_id) != TRACE_ID_BYTES
                        or len(span.span_id) != SPAN_ID_BYTES
                        or len(span.parent_span_id) not in _PARENT_ID_LENGTHS
                    ):
                        taken_out.append(index)
                        result.rejected += 1
                        result.rejected_reason = _invalid_ids_message(span)
                        continue
                    move = moves.get(trace_id, undecided)
                    if move is undecided:
                        mapping = store.lookup(trace_id, now)
                        if mapping is None:
                            if not resource_shell:
                                resource_shell = _resource_shell(resource_spans)
                            if not scope_shell:
                                scope_shell = _scope_shell(scope_spans)
                            to_hold.setdefault(trace_id, []).append(
                                (resource_shell, scope_shell, span.SerializeToString())
                            )
                            taken_out.append(index)
                            continue
                        move = moves[trace_id] = _Move.of(trace_id, mapping)
                    if move is None:
                        passed_through += 1
                    else:
                        move.apply(span)
                        stitched += 1
                for index in reversed(taken_out):
                    del scope_spans.spans[index]
        result.stitched = stitched
        result.count_unchanged(REASON_NO_JOB_LINK, passed_through)
        result.spans_out = passed_through + stitched
        if to_hold or result.rejected:
            result.modified = True
            _drop_empty(request)
        if stitched:
            result.modified = True
        self._append(result, released, REASON_NO_JOB_LINK, moves)
        self._hold(to_hold, now, result)
        return result

    def expire(self, now: float) -> StitchResult:
        """Forward (unchanged) every trace held longer than the window."""
        result = StitchResult(ExportTraceServiceRequest(), modified=True)
        expired = self.store.expire(now)
        self._append(result, expired, REASON_WINDOW_EXPIRED)
        return result

    def drain(self) -> StitchResult:
        """Forward (unchanged) everything held: the process is stopping."""
        result = StitchResult(ExportTraceServiceRequest(), modified=True)
        self._append(result, self.store.drain(), REASON_SHUTDOWN)
        return result

    # --- deciding ----------------------------------------------------------------------------
    def _decide_roots(
        self, request: ExportTraceServiceRequest, now: float
    ) -> tuple[dict[bytes, _Move | None], list[tuple[bytes, list[Fragment]]]]:
        """First pass: the traces this request decides (attempt roots, plain roots), remembered in the store.

        Also hands back the spans held earlier for those traces: they go out with this request.
        """
        store = self.store
        decided: dict[bytes, TraceMapping] = {}
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if span.parent_span_id and not span.links:
                        continue
                    trace_id = span.trace_id
                    if len(trace_id) != TRACE_ID_BYTES:
                        continue  # rejected in the second pass
                    link = self._attempt_link(span, trace_id)
                    if link is not None:
                        decided[trace_id] = TraceMapping(link.trace_id, link.span_id)
                    elif not span.parent_span_id and trace_id not in decided:
                        # A plain root; but an attempt root seen earlier in this trace still decides it.
                        decided[trace_id] = store.lookup(trace_id, now) or PASS_THROUGH
        for trace_id, mapping in decided.items():
            if mapping.target_trace_id is not None:
                decided[trace_id] = self._final_target(trace_id, mapping, decided, now)
        moves: dict[bytes, _Move | None] = {}
        released = []
        for trace_id, mapping in decided.items():
            store.remember(trace_id, mapping, now)
            moves[trace_id] = _Move.of(trace_id, mapping)
            fragments = store.release(trace_id)
            if fragments:
                released.append((trace_id, fragments))
        return moves, released

    def _final_target(
        self, trace_id: bytes, mapping: TraceMapping, decided: dict[bytes, TraceMapping], now: float
    ) -> TraceMapping:
        """Follow a job enqueued by another job: when the link's trace is itself an attempt trace that moves
        (decided in this request or remembered), go where that one goes. The parent stays the enqueuing span:
        span ids never change, so it is found in the final trace. Mappings are stored resolved, so chains are
        short; a cycle (only hostile input makes one) stops at the first repeat.

        When the enqueuing job's own root has not been seen yet, the link's trace is used as it is (the nested
        job ends up in its enqueuing job's original trace, still linked)."""
        target = mapping.target_trace_id
        seen = {trace_id, target}
        while True:
            onward = decided.get(target) or self.store.lookup(target, now)
            if onward is None or onward.target_trace_id is None or onward.target_trace_id in seen:
                break
            target = onward.target_trace_id
            seen.add(target)
        return mapping if target == mapping.target_trace_id else TraceMapping(target, mapping.link_span_id)

    def _attempt_link(self, span: Span, trace_id: bytes) -> Span.Link | None:
        """The link that makes ``span`` an attempt root, or None."""
        links = span.links
        if not links:
            return None
        chosen = None
        if (
            self._generic_messaging_rule
            and len(links) == 1
            and span.kind == Span.SPAN_KIND_CONSUMER
            and _is_process_operation(span.attributes)
        ):
            chosen = links[0]
        else:
            for link in links:
                if _has_string_attribute(link.attributes, ATTR_LINK_TYPE, LINK_TYPE_ENQUEUED_BY):
                    chosen = link
                    break
        if chosen is None:
            return None
        target = chosen.trace_id
        if (
            len(target) != TRACE_ID_BYTES
            or target in (_INVALID_TRACE_ID, trace_id)
            or len(chosen.span_id) != SPAN_ID_BYTES
        ):
            return None
        return chosen

    # --- holding and forwarding --------------------------------------------------------------
    def _hold(self, to_hold: dict[bytes, list[Fragment]], now: float, result: StitchResult) -> None:
        """Hold the spans of undecided traces, making room by forwarding the oldest held traces unchanged."""
        if not to_hold:
            return
        store = self.store
        costs = {trace_id: sum(map(fragment_cost, fragments)) for trace_id, fragments in to_hold.items()}
        evicted = store.evict_oldest(sum(map(len, to_hold.values())), sum(costs.values()))
        overflow = []
        for trace_id, fragments in to_hold.items():
            if store.fits(len(fragments), costs[trace_id]):
                store.hold(trace_id, fragments, costs[trace_id], now)
            else:
                overflow.append((trace_id, fragments))
        self._append(result, evicted + overflow, REASON_HOLD_FULL)

    def _append(
        self,
        result: StitchResult,
        traces: Iterable[tuple[bytes, list[Fragment]]],
        unchanged_reason: str,
        moves: dict[bytes, _Move | None] | None = None,
    ) -> None:
        """Rebuild held spans into ``result.request``; stitched when ``moves`` says so, else unchanged."""
        groups: dict[tuple[bytes, bytes], list[tuple[bytes, _Move | None]]] = {}
        for trace_id, fragments in traces:
            move = moves.get(trace_id) if moves else None
            for resource_shell, scope_shell, span_bytes in fragments:
                groups.setdefault((resource_shell, scope_shell), []).append((span_bytes, move))
        for (resource_shell, scope_shell), spans in groups.items():
            resource_spans = result.request.resource_spans.add()
            resource_spans.MergeFromString(resource_shell)
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.MergeFromString(scope_shell)
            for span_bytes, move in spans:
                span = scope_spans.spans.add()
                span.MergeFromString(span_bytes)
                if move is None:
                    result.count_unchanged(unchanged_reason, 1)
                else:
                    move.apply(span)
                    result.stitched += 1
            result.spans_out += len(spans)
            result.modified = True


class _Move:
    """How the spans of one original trace move, built once per trace per request so that moving a span only
    sets two bytes fields and appends ready ``KeyValue`` messages. (The hold store keeps the compact
    :class:`TraceMapping` instead: a prebuilt message per remembered trace would double its memory.)"""

    __slots__ = ("target_trace_id", "link_span_id", "original_attribute")

    def __init__(self, original_trace_id: bytes, mapping: TraceMapping) -> None:
        self.target_trace_id = mapping.target_trace_id
        self.link_span_id = mapping.link_span_id
        self.original_attribute = KeyValue(
            key=ATTR_STITCHED_ORIGINAL_TRACE_ID, value=AnyValue(string_value=original_trace_id.hex())
        )

    @classmethod
    def of(cls, original_trace_id: bytes, mapping: TraceMapping) -> _Move | None:
        """The move for a mapping, or None for a trace that passes through."""
        return None if mapping.target_trace_id is None else cls(original_trace_id, mapping)

    def apply(self, span: Span) -> None:
        """Put one span into the target trace and say where it came from."""
        span.trace_id = self.target_trace_id
        span.attributes.append(self.original_attribute)
        if not span.parent_span_id:
            span.parent_span_id = self.link_span_id
            span.attributes.append(_PARENT_FROM_LINK)


_UNDECIDED = object()
"""``moves.get`` default: this request does not decide the trace yet (a None move means: it passes through)."""


def _invalid_ids_message(span: Span) -> str:
    return (
        f"span ids must be {TRACE_ID_BYTES} bytes (trace), {SPAN_ID_BYTES} bytes (span) and empty or "
        f"{SPAN_ID_BYTES} bytes (parent); got {len(span.trace_id)}, {len(span.span_id)} and {len(span.parent_span_id)}"
    )


_OPERATION_KEYS = (ATTR_MESSAGING_OPERATION_TYPE, DEPRECATED_MESSAGING_OPERATION)


def _is_process_operation(attributes: Iterable[KeyValue]) -> bool:
    """``messaging.operation.type="process"``, or the same under the name semconv used before 1.26, which
    instrumentations such as Ruby's Sidekiq (link propagation style) still send."""
    for attribute in attributes:
        if attribute.key in _OPERATION_KEYS and attribute.value.string_value == OPERATION_PROCESS:
            return True
    return False


def _has_string_attribute(attributes: Iterable[KeyValue], key: str, value: str) -> bool:
    for attribute in attributes:
        if attribute.key == key:
            return attribute.value.string_value == value
    return False


def _resource_shell(resource_spans: ResourceSpans) -> bytes:
    return ResourceSpans(resource=resource_spans.resource, schema_url=resource_spans.schema_url).SerializeToString()


def _scope_shell(scope_spans: ScopeSpans) -> bytes:
    return ScopeSpans(scope=scope_spans.scope, schema_url=scope_spans.schema_url).SerializeToString()


def _drop_empty(request: ExportTraceServiceRequest) -> None:
    """Remove scopes and resources whose spans were all taken out, so nothing empty is forwarded."""
    for rs_index in reversed(range(len(request.resource_spans))):
        resource_spans = request.resource_spans[rs_index]
        for ss_index in reversed(range(len(resource_spans.scope_spans))):
            if not resource_spans.scope_spans[ss_index].spans:
                del resource_spans.scope_spans[ss_index]
        if not resource_spans.scope_spans:
            del request.resource_spans[rs_index]

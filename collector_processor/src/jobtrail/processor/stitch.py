"""The consume path's three stages: validate every span's ids, decide (pure), then apply in one pass.

1. *Validate* (:meth:`Stitcher._scan`): spans with ids of the wrong length are taken out and counted before
   anything looks at them, so a rejected span never decides anything; the same walk notes, per trace, the
   deciding span the request carries (see :mod:`jobtrail.processor.rules`) or its plain root.
2. *Decide* (:func:`jobtrail.processor.decide.decide`): those notes plus the decision cache's answers in,
   decisions out; nothing changes.
3. *Apply*: remember the decisions, release spans held for traces now decided, then one walk over the spans
   that moves (``trace_id := target``, parentless spans get the link's span as parent), passes, or holds each
   one. Scopes whose traces all pass are not walked at all.

Spans of an undecided trace wait in the span store, serialized once per trace and scope (not span by span),
until their decision arrives, the window ends or room runs out; the last two forward them unchanged (or, for a
Celery attempt still waiting for the trace its link points into, there as it is) and say so in the counts.
Everything touches protobuf fields directly (ids are ``bytes``, a move is one merge of prebuilt bytes):
per-span Python object conversion would cost more than the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from jobtrail.conventions import ATTR_STITCHED_ORIGINAL_TRACE_ID, ATTR_STITCHED_PARENT_FROM_LINK, LINK_TYPE_ENQUEUED_BY
from jobtrail.processor.config import STITCH_RULE_JOBTRAIL, STITCH_RULE_MESSAGING
from jobtrail.processor.decide import Known, decide
from jobtrail.processor.decision_cache import DecisionCache, TraceMapping
from jobtrail.processor.rules import SPAN_ID_BYTES, TRACE_ID_BYTES, link_finder, waits_for_its_origin
from jobtrail.processor.span_store import Held, SpanStore
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

_TRACE_ID_LENGTH = {TRACE_ID_BYTES}
_SPAN_ID_LENGTH = {SPAN_ID_BYTES}
_PARENT_LENGTHS = {0, SPAN_ID_BYTES}
DECIDING_MARKER = LINK_TYPE_ENQUEUED_BY.encode()
"""Bytes every deciding link of the ``jobtrail`` rule carries (the link attribute's value)."""
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


@dataclass
class _Scan:
    """What the validating walk learned about one request."""

    claims: dict[bytes, TraceMapping | None] = field(default_factory=dict)
    """Per trace: the mapping its deciding span carries, or None when only its plain root is here."""
    trace_ids: set[bytes] = field(default_factory=set)
    scopes: list[_ScopeScan] = field(default_factory=list)
    patient: set[bytes] = field(default_factory=set)
    """Traces whose claim waits when its link points into an undecided trace (Celery attempts)."""


@dataclass
class _ScopeScan:
    """One scope's valid spans with their trace ids (the wrappers are kept, so the apply walk reuses them)."""

    resource_spans: ResourceSpans
    scope_spans: ScopeSpans
    spans: list[Span]
    trace_ids: list[bytes]
    parents: list[bytes]
    distinct: set[bytes]


class Stitcher:
    """Moves linked job attempt traces into the trace that enqueued them, holding spans that came too early."""

    def __init__(self, spans: SpanStore, decisions: DecisionCache, rule: str) -> None:
        self.spans = spans
        self.decisions = decisions
        self._find_link = link_finder(rule)
        self._marker = DECIDING_MARKER if rule == STITCH_RULE_JOBTRAIL else None
        self._patience = rule == STITCH_RULE_MESSAGING

    def process(self, request: ExportTraceServiceRequest, now: float, raw: bytes | None = None) -> StitchResult:
        """Stitch ``request`` in place; spans to hold are taken out, spans released by it appended.

        ``raw``, the request's protobuf bytes when at hand, lets the scan skip the links of most spans: with the
        ``jobtrail`` rule a deciding link carries the ``enqueued_by`` marker, so the number of times those bytes
        occur in ``raw`` bounds the number of deciding spans in the request.
        """
        result = StitchResult(request)
        scan = self._scan(request, raw, result)
        known = partial(self.decisions.get, now=now)
        decided, waiting = decide(scan.claims, scan.trace_ids, known, scan.patient)
        release = [trace_id for trace_id in scan.claims if trace_id not in waiting]
        for trace_id, mapping in waiting.items():
            self.decisions.wait(trace_id, mapping)
        if self.decisions.anyone_waiting:
            self._settle_waiting(decided, known, release)
        self._apply(scan, decided, release, now, result)
        return result

    def expire(self, now: float) -> StitchResult:
        """Forward every trace held for the whole window (unchanged, or where a waiting claim points); forget
        decisions past their TTL."""
        self.decisions.expire(now)
        result = StitchResult(ExportTraceServiceRequest(), modified=True)
        expired = self.spans.expire(now)
        _append(result, expired, REASON_WINDOW_EXPIRED, self._give_up_waiting(expired, now))
        return result

    def drain(self) -> StitchResult:
        """Forward everything held: the process is stopping."""
        result = StitchResult(ExportTraceServiceRequest(), modified=True)
        drained = self.spans.drain()
        _append(result, drained, REASON_SHUTDOWN, self._give_up_waiting(drained, None))
        return result

    # --- 2b. waiting claims (decided elsewhere: decide.py) ---------------------------------------------
    def _settle_waiting(self, decided: dict[bytes, TraceMapping], known: Known, release: list[bytes]) -> None:
        """Claims that waited for a trace decided now go where it goes (and so on down a chain of retries),
        including claims that start waiting in this request: their trace may be settled by this same request."""
        frontier = list(decided)
        while frontier:
            for trace_id in list(self.decisions.waiting_on(frontier.pop())):
                mapping = self.decisions.stop_waiting(trace_id)
                assert mapping is not None
                settled, _ = decide({trace_id: mapping}, (), lambda other: decided.get(other) or known(other))
                decided[trace_id] = settled[trace_id]
                release.append(trace_id)
                frontier.append(trace_id)

    def _give_up_waiting(self, leaving: Held, now: float | None) -> dict[bytes, _Move | None]:
        """Traces leaving the store with a claim that still waits go where their link points, as it is."""
        moves: dict[bytes, _Move | None] = {}
        for trace_id, _fragments in leaving:
            mapping = self.decisions.stop_waiting(trace_id)
            if mapping is not None:
                if now is not None:
                    self.decisions.remember(trace_id, mapping, now)
                moves[trace_id] = _Move.of(trace_id, mapping)
        return moves

    # --- 1. validate (and note what the request says) -----------------------------------------------
    def _scan(self, request: ExportTraceServiceRequest, raw: bytes | None, result: StitchResult) -> _Scan:
        """Take out spans with invalid ids, then note each trace's deciding span or plain root.

        Parentless spans (attempt spans, plain roots) are checked as they come; the links of spans with a
        parent (the pickup marker, a consumer span under a poll span) only when deciding links may be left."""
        scan = _Scan()
        claims = scan.claims
        find_link = self._find_link
        found = 0
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                spans = list(scope_spans.spans)
                trace_ids = [span.trace_id for span in spans]
                parents = [span.parent_span_id for span in spans]
                if (
                    set(map(len, trace_ids)) - _TRACE_ID_LENGTH
                    or {len(span.span_id) for span in spans} - _SPAN_ID_LENGTH
                    or set(map(len, parents)) - _PARENT_LENGTHS
                ):
                    spans, trace_ids, parents = _take_out_invalid(scope_spans, result)
                if not spans:
                    continue
                for index in [index for index, parent in enumerate(parents) if not parent]:
                    span, trace_id = spans[index], trace_ids[index]
                    link = find_link(span, trace_id) if span.links else None
                    if link is not None:
                        claims[trace_id] = TraceMapping(link.trace_id, link.span_id)
                        found += 1
                        if self._patience and waits_for_its_origin(span):
                            scan.patient.add(trace_id)
                    elif trace_id not in claims:
                        claims[trace_id] = None
                distinct = set(trace_ids)
                scan.scopes.append(_ScopeScan(resource_spans, scope_spans, spans, trace_ids, parents, distinct))
                scan.trace_ids |= distinct
        if raw is None or self._marker is None or raw.count(self._marker) > found:
            for scope in scan.scopes:
                for span, trace_id in zip(scope.spans, scope.trace_ids, strict=True):
                    if span.links and span.parent_span_id:
                        link = find_link(span, trace_id)
                        if link is not None:
                            claims[trace_id] = TraceMapping(link.trace_id, link.span_id)
        return scan

    # --- 3. apply ------------------------------------------------------------------------------------
    def _apply(
        self, scan: _Scan, decided: dict[bytes, TraceMapping], release: list[bytes], now: float, result: StitchResult
    ) -> None:
        self.decisions.remember_all(decided, now)
        moves: dict[bytes, _Move | None] = {
            trace_id: None
            if mapping.target_trace_id is None
            else _Move(trace_id, mapping.target_trace_id, mapping.link_span_id)
            for trace_id, mapping in decided.items()
        }
        store = self.spans
        released = [(trace_id, store.release(trace_id)) for trace_id in release if trace_id in store]
        passed = stitched = 0
        taken_out = False
        for scope in scan.scopes:
            scope_moves = {trace_id: moves.get(trace_id, _UNDECIDED) for trace_id in scope.distinct}
            count = len(scope.spans)
            if all(move is None for move in scope_moves.values()):
                passed += count
                continue
            rows = zip(scope.spans, scope.trace_ids, scope.parents, strict=True)
            moved = 0
            to_hold: dict[bytes, list[int]] = {t: [] for t, move in scope_moves.items() if move is _UNDECIDED}
            if not to_hold:
                for span, trace_id, parent in rows:
                    move = scope_moves[trace_id]
                    if move is not None:
                        span.MergeFromString(move.child_delta if parent else move.root_delta)
                        moved += 1
            else:
                for index, (span, trace_id, parent) in enumerate(rows):
                    move = scope_moves[trace_id]
                    if move is _UNDECIDED:
                        to_hold[trace_id].append(index)
                    elif move is not None:
                        span.MergeFromString(move.child_delta if parent else move.root_delta)
                        moved += 1
                count -= self._hold(scope, to_hold, now)
                taken_out = True
            stitched += moved
            passed += count - moved
        result.stitched += stitched
        result.count_unchanged(REASON_NO_JOB_LINK, passed)
        result.spans_out += passed + stitched
        if stitched or taken_out:
            result.modified = True
        if taken_out or result.rejected:
            _drop_empty(result.request)
        _append(result, released, REASON_NO_JOB_LINK, moves)
        evicted = store.make_room()
        _append(result, evicted, REASON_HOLD_FULL, self._give_up_waiting(evicted, now))

    def _hold(self, scope: _ScopeScan, to_hold: dict[bytes, list[int]], now: float) -> int:
        """Keep the spans of undecided traces: one serialized ``ScopeSpans`` per trace, then take them out;
        how many."""
        spans, resource_spans, scope_spans = scope.spans, scope.resource_spans, scope.scope_spans
        resource = ResourceSpans(resource=resource_spans.resource, schema_url=resource_spans.schema_url)
        resource_bytes = resource.SerializeToString()
        instrumentation_scope, schema_url = scope_spans.scope, scope_spans.schema_url
        held: list[int] = []
        for trace_id, indexes in to_hold.items():
            group = ScopeSpans(
                scope=instrumentation_scope, schema_url=schema_url, spans=[spans[index] for index in indexes]
            )
            self.spans.hold(trace_id, resource_bytes, group.SerializeToString(), len(indexes), now)
            held.extend(indexes)
        if len(held) == len(spans):
            del scope_spans.spans[:]
        else:
            for index in sorted(held, reverse=True):
                del scope_spans.spans[index]
        return len(held)


class _Move:
    """How the spans of one original trace move, built once per trace per request: moving a span is one
    ``MergeFromString`` of a prebuilt delta (``trace_id`` := target, the stitch attributes appended; for a
    parentless span also its parent), several times cheaper than setting fields and appending attributes one by
    one. (The decision cache keeps the compact :class:`TraceMapping` instead: prebuilt deltas per remembered
    trace would multiply its memory.)"""

    __slots__ = ("child_delta", "root_delta")

    def __init__(self, original_trace_id: bytes, target_trace_id: bytes, link_span_id: bytes) -> None:
        self.child_delta = b"".join(
            (_TRACE_ID_FIELD, target_trace_id, _ORIGINAL_ATTRIBUTE_FIELD, original_trace_id.hex().encode())
        )
        self.root_delta = b"".join((self.child_delta, _PARENT_FIELD, link_span_id, _PARENT_FROM_LINK_FIELD))

    @classmethod
    def of(cls, original_trace_id: bytes, mapping: TraceMapping) -> _Move | None:
        """The move for a mapping, or None for a trace that passes through."""
        if mapping.target_trace_id is None:
            return None
        return cls(original_trace_id, mapping.target_trace_id, mapping.link_span_id)

    def apply(self, span: Span) -> None:
        """Put one span into the target trace and say where it came from."""
        span.MergeFromString(self.child_delta if span.parent_span_id else self.root_delta)


def _field_prefix(span: Span, value_length: int) -> bytes:
    """The wire bytes of ``span``'s only field, without its last ``value_length`` bytes (the value itself)."""
    return span.SerializeToString()[:-value_length]


# Wire bytes of the fields a move merges into a span, made by protobuf itself once (fixed-size values only).
_TRACE_ID_FIELD = _field_prefix(Span(trace_id=bytes(TRACE_ID_BYTES)), TRACE_ID_BYTES)
_PARENT_FIELD = _field_prefix(Span(parent_span_id=bytes(SPAN_ID_BYTES)), SPAN_ID_BYTES)
_ORIGINAL_HEX_LENGTH = 2 * TRACE_ID_BYTES
_ORIGINAL_ATTRIBUTE_FIELD = _field_prefix(
    Span(
        attributes=[
            KeyValue(key=ATTR_STITCHED_ORIGINAL_TRACE_ID, value=AnyValue(string_value="0" * _ORIGINAL_HEX_LENGTH))
        ]
    ),
    _ORIGINAL_HEX_LENGTH,
)
_PARENT_FROM_LINK_FIELD = Span(attributes=[_PARENT_FROM_LINK]).SerializeToString()

_UNDECIDED = _Move(b"", b"", b"")
"""``moves.get`` default, compared by identity: the trace is undecided, its spans wait (None: it passes through)."""


def _append(result: StitchResult, traces: Held, unchanged_reason: str, moves: dict[bytes, _Move | None]) -> None:
    """Add held spans to ``result.request``: stitched when ``moves`` says so, else unchanged (counted)."""
    if not traces:
        return
    request = result.request
    by_resource: dict[bytes, ResourceSpans] = {}
    for trace_id, fragments in traces:
        move = moves.get(trace_id)
        for resource, scope_spans_bytes, count in fragments:
            resource_spans = by_resource.get(resource)
            if resource_spans is None:
                resource_spans = by_resource[resource] = request.resource_spans.add()
                resource_spans.MergeFromString(resource)
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.MergeFromString(scope_spans_bytes)
            if move is None:
                result.count_unchanged(unchanged_reason, count)
            else:
                for span in scope_spans.spans:
                    move.apply(span)
                result.stitched += count
            result.spans_out += count
    result.modified = True


def _take_out_invalid(scope_spans: ScopeSpans, result: StitchResult) -> tuple[list[Span], list[bytes], list[bytes]]:
    """Remove (and count) the spans of a scope whose ids have the wrong length; the rest, with their ids."""
    invalid = [
        index
        for index, span in enumerate(scope_spans.spans)
        if len(span.trace_id) != TRACE_ID_BYTES
        or len(span.span_id) != SPAN_ID_BYTES
        or len(span.parent_span_id) not in _PARENT_LENGTHS
    ]
    result.rejected += len(invalid)
    result.rejected_reason = _invalid_ids_message(scope_spans.spans[invalid[-1]])
    result.modified = True
    for index in reversed(invalid):
        del scope_spans.spans[index]
    spans = list(scope_spans.spans)
    return spans, [span.trace_id for span in spans], [span.parent_span_id for span in spans]


def _invalid_ids_message(span: Span) -> str:
    return (
        f"span ids must be {TRACE_ID_BYTES} bytes (trace), {SPAN_ID_BYTES} bytes (span) and empty or "
        f"{SPAN_ID_BYTES} bytes (parent); got {len(span.trace_id)}, {len(span.span_id)} and {len(span.parent_span_id)}"
    )


def _drop_empty(request: ExportTraceServiceRequest) -> None:
    """Remove scopes and resources whose spans were all taken out, so nothing empty is forwarded."""
    for rs_index in reversed(range(len(request.resource_spans))):
        resource_spans = request.resource_spans[rs_index]
        for ss_index in reversed(range(len(resource_spans.scope_spans))):
            if not resource_spans.scope_spans[ss_index].spans:
                del resource_spans.scope_spans[ss_index]
        if not resource_spans.scope_spans:
            del request.resource_spans[rs_index]

"""The consume path's three stages: validate every span's ids, decide (pure), then apply in one pass.

Two paths give the same result. With the C scanner (``jobtrail._otlp_wire``, installed apart: see
collector_processor/wire/) a request is stitched on its bytes (:meth:`Stitcher._process_bytes`): the scan
validates every span's ids and notes each trace's deciding span or plain root, handing Python only per-trace
notes; after the decision, one rewrite moves spans by appending their trace's delta to their bytes, takes held
and invalid spans out and keeps every other byte as it came. Without it, the stitcher works on the processor's
view of OTLP (:mod:`jobtrail.processor.view`): only ids and links are parsed, every other field of a span
travels as the bytes that came. Either way, results come in the type the stitcher was made with: the full types
by default, for callers that read spans; the pipeline takes the view, which it only serializes.

On the view path:

1. *Validate* (:meth:`Stitcher._scan`): per scope, every span's three ids are read once, in C-level ``map``
   calls (no Python code runs per span); spans with ids of the wrong length are taken out and counted before
   anything looks at them, so a rejected span never decides anything. Then only the parentless spans are looked
   at one by one, to note per trace the deciding span the request carries (see :mod:`jobtrail.processor.rules`)
   or its plain root. Spans with a parent are searched for a deciding link (a pickup marker) only when the
   request may hold one: with the ``jobtrail`` rule, when its bytes carry the ``enqueued_by`` marker more often
   than the deciding links found on parentless spans.
2. *Decide* (:func:`jobtrail.processor.decide.decide`, shared by both paths): those notes plus the decision
   cache's answers in, decisions out; nothing changes.
3. *Apply*: remember the decisions, release spans held for traces now decided, then per scope: a scope whose
   traces all pass is not touched; every span of a moving trace gets its trace's prebuilt delta merged in (one
   C-level ``map`` over those spans; a parentless one then gets its parent from the link), and the spans of
   undecided traces are held.

Spans of an undecided trace wait in the span store, serialized once per trace and scope (not span by span),
until their decision arrives, the window ends or room runs out; the last two forward them unchanged (or, for a
Celery attempt still waiting for the trace its link points into, there as it is) and say so in the counts.
Released spans go out as bytes on both paths. Everything touches protobuf fields or bytes directly (ids are
``bytes``, a move is one merge or concatenation of prebuilt bytes): per-span Python object conversion would cost
more than the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, repeat
from operator import attrgetter, not_
from typing import NamedTuple

from jobtrail.conventions import (
    ATTR_LINK_TYPE,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    ATTR_STITCHED_PARENT_FROM_LINK,
    LINK_TYPE_ENQUEUED_BY,
)
from jobtrail.processor.config import STITCH_RULE_JOBTRAIL, STITCH_RULE_MESSAGING
from jobtrail.processor.decide import Known, decide
from jobtrail.processor.decision_cache import DecisionCache, TraceMapping
from jobtrail.processor.rules import SPAN_ID_BYTES, TRACE_ID_BYTES, link_finder, waits_for_its_origin
from jobtrail.processor.span_store import Held, SpanStore
from jobtrail.processor.view import (
    SerializedResources,
    SerializedScopes,
    SerializedSpans,
    TraceRequest,
    ViewResourceSpans,
    ViewScopeSpans,
    ViewSpan,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

try:
    from jobtrail import _otlp_wire
except ImportError:  # the optional C scanner is not installed: the view path does everything
    _otlp_wire = None  # type: ignore[assignment]

_TRACE_ID_LENGTH = {TRACE_ID_BYTES}
_SPAN_ID_LENGTH = {SPAN_ID_BYTES}
_PARENT_LENGTHS = {0, SPAN_ID_BYTES}
_TRACE_ID = attrgetter("trace_id")
_PARENT = attrgetter("parent_span_id")
_SPAN_ID = attrgetter("span_id")
_LINKS = attrgetter("links")
_MERGE = ViewSpan.MergeFromString
_SERIALIZE = ViewSpan.SerializeToString
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
    ``head``: on the C scanner's path, the incoming request as rewritten on its bytes (``request`` is not used
    then). ``appended``: spans that left the span store with this request (released, evicted, expired), as a
    serialized request. :meth:`serialized` joins them.
    """

    request: ExportTraceServiceRequest
    head: bytes | None = None
    appended: bytes = b""
    modified: bool = False
    spans_out: int = 0
    stitched: int = 0
    held: int = 0
    """Spans of this request kept in the span store (not in what goes out now)."""
    unchanged: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    rejected_reason: str = ""

    def count_unchanged(self, reason: str, spans: int) -> None:
        if spans:
            self.unchanged[reason] = self.unchanged.get(reason, 0) + spans

    def serialized(self) -> bytes:
        """What goes out, as bytes (two serialized requests one after the other are their merge)."""
        return (self.head if self.head is not None else self.request.SerializeToString()) + self.appended


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
    """One scope's valid spans with their ids (the wrappers are kept, so the apply stage reuses them)."""

    resource_spans: ResourceSpans
    scope_spans: ScopeSpans
    spans: list[Span]
    trace_ids: list[bytes]
    parents: list[bytes]
    roots: list[Span]
    """The parentless spans (with their trace ids: ``root_trace_ids``)."""
    root_trace_ids: list[bytes]
    distinct: set[bytes]


class Stitcher:
    """Moves linked job attempt traces into the trace that enqueued them, holding spans that came too early."""

    def __init__(
        self,
        spans: SpanStore,
        decisions: DecisionCache,
        rule: str,
        results: type[ExportTraceServiceRequest] = ExportTraceServiceRequest,
        use_c_scanner: bool = True,
    ) -> None:
        self.spans = spans
        self.decisions = decisions
        self._find_link = link_finder(rule)
        self._marker = DECIDING_MARKER if rule == STITCH_RULE_JOBTRAIL else None
        self._patience = rule == STITCH_RULE_MESSAGING
        self._results = results
        self._wire = _otlp_wire if use_c_scanner else None
        # The C scanner decides the enqueued_by shape itself; other rules get the bytes of spans with links.
        self._link_type = (
            (ATTR_LINK_TYPE.encode(), LINK_TYPE_ENQUEUED_BY.encode()) if rule == STITCH_RULE_JOBTRAIL else (None, None)
        )

    @property
    def uses_c_scanner(self) -> bool:
        """Whether requests go through the C scanner (``jobtrail._otlp_wire``, installed apart)."""
        return self._wire is not None

    def process(self, request: ExportTraceServiceRequest, now: float, raw: bytes | None = None) -> StitchResult:
        """Stitch ``request`` (in place when it is a view); spans to hold are taken out, spans released by it
        appended.

        ``raw``, the request's protobuf bytes when at hand, spares serializing a full request to take it in, and
        lets the scan skip the links of spans with a parent (see the module docstring). With the C scanner, a
        request in the full types is stitched on its bytes (:meth:`_process_bytes`), never parsed here.
        """
        if not isinstance(request, TraceRequest):
            raw = raw if raw is not None else request.SerializeToString()
            scanned = self._wire.scan(raw, *self._link_type) if self._wire is not None else None
            if scanned is not None:
                return self._as_results(self._process_bytes(raw, scanned, now))
            request = TraceRequest.FromString(raw)
        result = StitchResult(request)
        scan = self._scan(request, raw, result)
        decided, release = self._decide(scan, now)
        self._apply(scan, decided, release, now, result)
        return self._as_results(result)

    def _process_bytes(self, raw: bytes, scanned: _otlp_wire.Scanned, now: float) -> StitchResult:
        """The three stages with the per-span work in C: the scan's notes, decide, then one rewrite of the bytes."""
        assert self._wire is not None
        roots_per_scope, linked_children, trace_ids, valid, rejected, last_invalid, parsed = scanned
        result = StitchResult(TraceRequest())
        if last_invalid is not None:
            result.rejected = rejected
            result.rejected_reason = _invalid_ids_message(*last_invalid)
        scan = _Scan(trace_ids=trace_ids)
        for roots in roots_per_scope:  # as _note_roots: the plain roots of a scope first, then the linked ones
            for trace_id, note in roots:
                if note is None:
                    scan.claims.setdefault(trace_id, None)
            for trace_id, note in roots:
                self._take_note(note, trace_id, scan, self._note_linked_root)
        for trace_id, note in linked_children:
            self._take_note(note, trace_id, scan, self._note_linked_child)
        decided, release = self._decide(scan, now)
        moves, released = self._settle(decided, release, now)
        deltas = {trace_id: move for trace_id, move in moves.items() if move is not None}
        payload, moved, held = self._wire.rewrite(parsed, deltas, trace_ids - decided.keys())
        held_spans = 0
        for trace_id, resource, fragment, count in held:
            self.spans.hold(trace_id, resource, fragment, count, now)
            held_spans += count
        result.held = held_spans
        result.head = raw if payload is None else payload
        result.modified = payload is not None
        result.stitched += moved
        passed = valid - moved - held_spans
        result.count_unchanged(REASON_NO_JOB_LINK, passed)
        result.spans_out += passed + moved
        self._finish(result, released, moves, now)
        return result

    @staticmethod
    def _take_note(note: _otlp_wire.Note, trace_id: bytes, scan: _Scan, read_span: Callable[..., object]) -> None:
        """A span's note from the C scanner: the claim it decided (the enqueued_by shape), or the bytes of a span
        with links for ``read_span`` (a rule the scanner does not know), or None."""
        if isinstance(note, tuple):
            scan.claims[trace_id] = TraceMapping(*note)
        elif note is not None:
            read_span(ViewSpan.FromString(note), trace_id, scan)

    def _decide(self, scan: _Scan, now: float) -> tuple[dict[bytes, TraceMapping], list[bytes]]:
        """Decisions for the request's traces (claims that wait are parked), and the traces to release."""
        known = partial(self.decisions.get, now=now)
        decided, waiting = decide(scan.claims, scan.trace_ids, known, scan.patient)
        release = [trace_id for trace_id in scan.claims if trace_id not in waiting]
        for trace_id, mapping in waiting.items():
            self.decisions.wait(trace_id, mapping)
        if self.decisions.anyone_waiting:
            self._settle_waiting(decided, known, release)
        return decided, release

    def expire(self, now: float) -> StitchResult:
        """Forward every trace held for the whole window (unchanged, or where a waiting claim points); forget
        decisions past their TTL."""
        self.decisions.expire(now)
        result = StitchResult(TraceRequest(), modified=True)
        expired = self.spans.expire(now)
        self._append(result, expired, REASON_WINDOW_EXPIRED, self._give_up_waiting(expired, now))
        return self._as_results(result)

    def drain(self) -> StitchResult:
        """Forward everything held: the process is stopping."""
        result = StitchResult(TraceRequest(), modified=True)
        drained = self.spans.drain()
        self._append(result, drained, REASON_SHUTDOWN, self._give_up_waiting(drained, None))
        return self._as_results(result)

    def _as_results(self, result: StitchResult) -> StitchResult:
        if self._results is not TraceRequest:
            result.request = self._results.FromString(result.serialized())
            result.head, result.appended = None, b""
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
        """Take out spans with invalid ids, then note each trace's deciding span or plain root."""
        scan = _Scan()
        # Deciding links the request may hold: with the jobtrail rule, at most as many as its bytes carry markers.
        markers = raw.count(self._marker) if raw is not None and self._marker is not None else None
        found = 0
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                spans = list(scope_spans.spans)
                trace_ids = list(map(_TRACE_ID, spans))
                parents = list(map(_PARENT, spans))
                if not (
                    set(map(len, trace_ids)) <= _TRACE_ID_LENGTH
                    and set(map(len, parents)) <= _PARENT_LENGTHS
                    and set(map(len, map(_SPAN_ID, spans))) <= _SPAN_ID_LENGTH
                ):
                    spans, trace_ids, parents = _take_out_invalid(scope_spans, result)
                    if not spans:
                        continue
                is_root = list(map(not_, parents))
                roots, root_trace_ids = list(compress(spans, is_root)), list(compress(trace_ids, is_root))
                if markers == 0:  # no link here can decide: every root is a plain one
                    deque(map(scan.claims.setdefault, root_trace_ids), maxlen=0)
                else:
                    found += self._note_roots(roots, root_trace_ids, scan)
                distinct = set(trace_ids)
                scan.scopes.append(
                    _ScopeScan(resource_spans, scope_spans, spans, trace_ids, parents, roots, root_trace_ids, distinct)
                )
                scan.trace_ids |= distinct
        if markers is None or markers > found:
            for scope in scan.scopes:
                for span, trace_id in compress(zip(scope.spans, scope.trace_ids, strict=True), scope.parents):
                    if span.links:
                        self._note_linked_child(span, trace_id, scan)
        return scan

    def _note_roots(self, roots: list[Span], trace_ids: list[bytes], scan: _Scan) -> int:
        """Note the parentless spans of a scope: a trace's claim where a link decides, else the trace's plain root
        (which never overrides a claim); how many claims."""
        claims = scan.claims
        linked = list(map(len, map(_LINKS, roots)))
        deque(map(claims.setdefault, compress(trace_ids, map(not_, linked))), maxlen=0)
        return sum(
            self._note_linked_root(span, trace_id, scan)
            for span, trace_id in compress(zip(roots, trace_ids, strict=True), linked)
        )

    def _note_linked_root(self, span: Span, trace_id: bytes, scan: _Scan) -> bool:
        """A parentless span with links: its trace's claim when a link decides (whether one did), else its plain
        root."""
        link = self._find_link(span, trace_id)
        if link is None:
            scan.claims.setdefault(trace_id, None)
            return False
        scan.claims[trace_id] = TraceMapping(link.trace_id, link.span_id)
        if self._patience and waits_for_its_origin(span):
            scan.patient.add(trace_id)
        return True

    def _note_linked_child(self, span: Span, trace_id: bytes, scan: _Scan) -> None:
        """A span with a parent and links (a pickup marker): its trace's claim when a link decides."""
        link = self._find_link(span, trace_id)
        if link is not None:
            scan.claims[trace_id] = TraceMapping(link.trace_id, link.span_id)

    # --- 3. apply ------------------------------------------------------------------------------------
    def _apply(
        self, scan: _Scan, decided: dict[bytes, TraceMapping], release: list[bytes], now: float, result: StitchResult
    ) -> None:
        moves, released = self._settle(decided, release, now)
        passed = stitched = 0
        taken_out = False
        for scope in scan.scopes:
            fates = {trace_id: moves.get(trace_id, _UNDECIDED) for trace_id in scope.distinct}
            count = len(scope.spans)
            if not any(fates.values()):  # every trace of the scope passes
                passed += count
                continue
            moved = _move(scope, fates)
            undecided = {trace_id for trace_id, move in fates.items() if move is _UNDECIDED}
            if undecided:
                held = self._hold(scope, undecided, now)
                count -= held
                result.held += held
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
        self._finish(result, released, moves, now)

    def _settle(self, decided: dict[bytes, TraceMapping], release: list[bytes], now: float) -> tuple[Moves, Held]:
        """Remember the decisions; how each decided trace moves (None: it passes); the held traces released."""
        self.decisions.remember_all(decided, now)
        moves = {trace_id: _Move.of(trace_id, mapping) for trace_id, mapping in decided.items()}
        return moves, self.spans.release(release)

    def _finish(self, result: StitchResult, released: Held, moves: Moves, now: float) -> None:
        """Append the released traces, then make room in the span store (what it evicts goes out unchanged)."""
        self._append(result, released, REASON_NO_JOB_LINK, moves)
        evicted = self.spans.make_room()
        self._append(result, evicted, REASON_HOLD_FULL, self._give_up_waiting(evicted, now))

    def _append(self, result: StitchResult, traces: Held, unchanged_reason: str, moves: Moves) -> None:
        """Add held spans to what goes out, as bytes: stitched when ``moves`` says so, else unchanged (counted)."""
        if not traces:
            return
        by_resource: dict[bytes, list[bytes]] = {}
        for trace_id, fragments in traces:
            move = moves.get(trace_id)
            for resource, scope_spans, count in fragments:
                if move is None:
                    result.count_unchanged(unchanged_reason, count)
                else:
                    scope_spans = self._moved(scope_spans, move)
                    result.stitched += count
                by_resource.setdefault(resource, []).append(scope_spans)
                result.spans_out += count
        resources = [
            resource + SerializedScopes(scope_spans=scopes).SerializeToString()
            for resource, scopes in by_resource.items()
        ]
        result.appended += SerializedResources(resource_spans=resources).SerializeToString()
        result.modified = True

    def _moved(self, scope_spans: bytes, move: _Move) -> bytes:
        """A held ``ScopeSpans`` with every span moved (parentless ones given their parent from the link)."""
        if self._wire is not None:
            return self._wire.move_fragment(scope_spans, move.child_delta, move.root_extra)
        scope = ViewScopeSpans.FromString(scope_spans)
        spans = list(scope.spans)
        deque(map(_MERGE, spans, repeat(move.child_delta)), maxlen=0)
        deque(map(_MERGE, compress(spans, map(not_, map(_PARENT, spans))), repeat(move.root_extra)), maxlen=0)
        return scope.SerializeToString()

    def _hold(self, scope: _ScopeScan, undecided: set[bytes], now: float) -> int:
        """Keep the spans of undecided traces (one fragment per trace: the scope with those spans, serialized
        span by span in C), then take them out of the request; how many."""
        scope_spans, resource_spans = scope.scope_spans, scope.resource_spans
        held = list(map(undecided.__contains__, scope.trace_ids))
        groups: dict[bytes, list[bytes]] = {}
        serialized = map(_SERIALIZE, compress(scope.spans, held))
        for trace_id, span_bytes in zip(compress(scope.trace_ids, held), serialized, strict=True):
            members = groups.get(trace_id)
            if members is None:
                groups[trace_id] = [span_bytes]
            else:
                members.append(span_bytes)
        resource = ViewResourceSpans(resource=resource_spans.resource, schema_url=resource_spans.schema_url)
        resource_bytes = resource.SerializeToString()
        shell = ViewScopeSpans(scope=scope_spans.scope, schema_url=scope_spans.schema_url).SerializeToString()
        for trace_id, members in groups.items():
            fragment = shell + SerializedSpans(spans=members).SerializeToString()  # concatenation = merge
            self.spans.hold(trace_id, resource_bytes, fragment, len(members), now)
        indexes = list(compress(range(len(held)), held))
        _delete(scope_spans.spans, indexes)
        return len(indexes)


def _delete(field: MutableSequence[Span], indexes: list[int]) -> None:
    """Delete the elements at ``indexes`` (ascending) from a repeated field: each run of neighbours (a trace's
    spans usually come together) with one slice deletion, the last run first."""
    end = len(indexes)
    while end:
        start = end - 1
        while start and indexes[start - 1] == indexes[start] - 1:
            start -= 1
        del field[indexes[start] : indexes[end - 1] + 1]
        end = start


def _move(scope: _ScopeScan, fates: dict[bytes, _Move | None]) -> int:
    """Merge each moving trace's delta into its spans of ``scope`` (a C-level loop), then give parentless ones
    their parent; how many moved."""
    moving = {trace_id: move for trace_id, move in fates.items() if move is not None and move is not _UNDECIDED}
    if not moving:
        return 0
    per_span = list(map({trace_id: move.child_delta for trace_id, move in moving.items()}.get, scope.trace_ids))
    _merge_all(scope.spans, per_span)
    extras = {trace_id: move.root_extra for trace_id, move in moving.items()}
    _merge_all(scope.roots, list(map(extras.get, scope.root_trace_ids)))
    return len(per_span) - per_span.count(None)


def _merge_all(spans: list[Span], deltas: list[bytes | None]) -> None:
    """Merge ``deltas[i]`` into ``spans[i]`` where it is not None, in one C-level loop."""
    deque(map(_MERGE, compress(spans, deltas), filter(None, deltas)), maxlen=0)


class _Move(NamedTuple):
    """How the spans of one original trace move, built once per trace per request: moving a span is one merge of
    a prebuilt delta (``trace_id`` := target, the stitch attribute appended), and one more for a parentless span
    (its parent from the link, the attribute saying so): several times cheaper than setting fields and appending
    attributes one by one; on the C scanner's path both are appended to the span's bytes. (The decision cache
    keeps the compact :class:`TraceMapping` instead: prebuilt deltas per remembered trace would multiply its
    memory.)"""

    child_delta: bytes
    root_extra: bytes

    @classmethod
    def of(cls, original_trace_id: bytes, mapping: TraceMapping) -> _Move | None:
        """The move for a mapping, or None for a trace that passes through."""
        target = mapping.target_trace_id
        if target is None:
            return None
        return cls(
            _TRACE_ID_FIELD + target + _ORIGINAL_ATTRIBUTE_FIELD + original_trace_id.hex().encode(),
            _PARENT_FIELD + mapping.link_span_id + _PARENT_FROM_LINK_FIELD,
        )


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

Moves = dict[bytes, "_Move | None"]
"""Per decided trace of a request: how its spans move, or None when they pass through."""

_UNDECIDED = _Move(b"", b"")
"""``moves.get`` default, compared by identity: the trace is undecided, its spans wait (None: it passes through)."""


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
    last = scope_spans.spans[invalid[-1]]
    result.rejected_reason = _invalid_ids_message(len(last.trace_id), len(last.span_id), len(last.parent_span_id))
    result.modified = True
    for index in reversed(invalid):
        del scope_spans.spans[index]
    spans = list(scope_spans.spans)
    return spans, list(map(_TRACE_ID, spans)), list(map(_PARENT, spans))


def _invalid_ids_message(trace_id: int, span_id: int, parent_span_id: int) -> str:
    """Why spans were rejected, from the id lengths of the last of them."""
    return (
        f"span ids must be {TRACE_ID_BYTES} bytes (trace), {SPAN_ID_BYTES} bytes (span) and empty or "
        f"{SPAN_ID_BYTES} bytes (parent); got {trace_id}, {span_id} and {parent_span_id}"
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

"""The span store: spans of traces whose decision is not known yet, waiting for the span that decides it.

Bounded by span count and by bytes, and the byte count is everything the store keeps for a held span: the
serialized spans, the serialized scope that comes with them, the resource (kept once per distinct resource
however many spans and requests share it) and the bookkeeping objects around them. Traces leave when they are
released (decided), after the hold window, or oldest first when room is needed; the caller forwards the last
two unchanged, never drops them. No clocks are read here: ``now`` is passed in.
"""

from __future__ import annotations

from collections import OrderedDict

Fragment = tuple[bytes, bytes, int]
"""Held spans of one trace from one scope of one request: (the ``ResourceSpans`` without scopes, a ``ScopeSpans``
with the scope and those spans, the number of spans), both serialized. Serialized bytes are the smallest faithful
form of spans in Python, and one serialization per trace and scope is far cheaper than one per span."""

Held = list[tuple[bytes, list[Fragment]]]
"""Traces taken out of the store: (original trace id, its fragments in arrival order)."""

FRAGMENT_OVERHEAD_BYTES = 160
"""A fragment beyond its serialized size: the tuple, the bytes object's header, the int, its list slot."""
RESOURCE_OVERHEAD_BYTES = 200
"""A distinct held resource beyond its serialized size: the bytes object, its dict entry and reference count."""
TRACE_OVERHEAD_BYTES = 400
"""A held trace: its id, its record and list, and its entry in the ordered dict."""


class _HeldTrace:
    __slots__ = ("first_seen", "fragments", "spans", "cost")

    def __init__(self, first_seen: float) -> None:
        self.first_seen = first_seen
        self.fragments: list[Fragment] = []
        self.spans = 0
        self.cost = TRACE_OVERHEAD_BYTES


class _Resource:
    __slots__ = ("data", "refs")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.refs = 0


class SpanStore:
    """Held fragments by original trace id, in arrival (= expiry) order."""

    def __init__(self, hold_seconds: float, max_spans: int, max_bytes: int) -> None:
        self.hold_seconds = hold_seconds
        self.max_spans = max_spans
        self.max_bytes = max_bytes
        self._held: OrderedDict[bytes, _HeldTrace] = OrderedDict()
        self._resources: dict[bytes, _Resource] = {}
        self.held_spans = 0
        self.held_bytes = 0

    @property
    def held_traces(self) -> int:
        return len(self._held)

    def hold(self, trace_id: bytes, resource: bytes, scope_spans: bytes, spans: int, now: float) -> None:
        """Keep ``spans`` spans of ``trace_id`` (serialized in ``scope_spans``); :meth:`make_room` afterwards."""
        held = self._held.get(trace_id)
        if held is None:
            held = self._held[trace_id] = _HeldTrace(now)
            self.held_bytes += TRACE_OVERHEAD_BYTES
        shared = self._resources.get(resource)
        if shared is None:
            shared = self._resources[resource] = _Resource(resource)
            self.held_bytes += len(resource) + RESOURCE_OVERHEAD_BYTES
        shared.refs += 1
        cost = len(scope_spans) + FRAGMENT_OVERHEAD_BYTES
        held.fragments.append((shared.data, scope_spans, spans))
        held.spans += spans
        held.cost += cost
        self.held_spans += spans
        self.held_bytes += cost

    def release(self, trace_ids: list[bytes]) -> Held:
        """Take out every held span of those of ``trace_ids`` held here (their decisions just arrived)."""
        released = []
        pop = self._held.pop
        for trace_id in trace_ids:
            held = pop(trace_id, None)
            if held is not None:
                self._forget(held)
                released.append((trace_id, held.fragments))
        return released

    def make_room(self) -> Held:
        """Take out the oldest traces until both bounds hold again (the newest go too if they alone are too big)."""
        evicted = []
        while self._held and (self.held_spans > self.max_spans or self.held_bytes > self.max_bytes):
            trace_id, held = self._held.popitem(last=False)
            self._forget(held)
            evicted.append((trace_id, held.fragments))
        return evicted

    def expire(self, now: float) -> Held:
        """Take out traces held for the whole window."""
        expired = []
        deadline = now - self.hold_seconds
        while self._held:
            trace_id, held = next(iter(self._held.items()))
            if held.first_seen > deadline:
                break
            del self._held[trace_id]
            self._forget(held)
            expired.append((trace_id, held.fragments))
        return expired

    def drain(self) -> Held:
        """Take out everything (shutdown)."""
        drained = [(trace_id, held.fragments) for trace_id, held in self._held.items()]
        self._held.clear()
        self._resources.clear()
        self.held_spans = self.held_bytes = 0
        return drained

    def _forget(self, held: _HeldTrace) -> None:
        self.held_spans -= held.spans
        self.held_bytes -= held.cost
        for resource, _scope_spans, _spans in held.fragments:
            shared = self._resources[resource]
            shared.refs -= 1
            if not shared.refs:
                del self._resources[resource]
                self.held_bytes -= len(resource) + RESOURCE_OVERHEAD_BYTES

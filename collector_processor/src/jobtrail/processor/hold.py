"""The processor's only state: spans waiting for their trace's root, and original -> target trace mappings.

Both are bounded. Held traces leave after the hold window (or when room is needed, oldest first) and are
forwarded unchanged by the caller, never dropped; mappings live for a TTL so late spans of a known attempt
trace (late children, a slow worker) are moved at once. No clocks are read here: ``now`` is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

Fragment = tuple[bytes, bytes, bytes]
"""A held span: (its ResourceSpans without scopes, its ScopeSpans without spans, the span), all serialized.

Serialized bytes are the smallest faithful form of a span in Python, and the two shells are shared by every
span that came in the same scope, so a held span costs little more than its wire size.
"""

HELD_SPAN_OVERHEAD_BYTES = 144
"""What a held span costs beyond its serialized size (the tuple, the bytes object, its list slot, a share of
the shells): the benchmark's tracemalloc figure minus the wire size, rounded up. ``max_held_bytes`` counts
``len(span) + HELD_SPAN_OVERHEAD_BYTES`` per held span."""


def fragment_cost(fragment: Fragment) -> int:
    return len(fragment[2]) + HELD_SPAN_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class TraceMapping:
    """What to do with the spans of one original trace.

    ``target_trace_id`` is None for a trace known to need nothing (its root has no job link); otherwise the
    spans move into that trace and a parentless span gets ``link_span_id`` as parent. Kept small on purpose:
    the store holds one per remembered attempt trace (plain traces share :data:`PASS_THROUGH`).
    """

    target_trace_id: bytes | None
    link_span_id: bytes = b""


PASS_THROUGH = TraceMapping(target_trace_id=None)


class _HeldTrace:
    __slots__ = ("first_seen", "fragments", "cost")

    def __init__(self, first_seen: float) -> None:
        self.first_seen = first_seen
        self.fragments: list[Fragment] = []
        self.cost = 0


class HoldStore:
    """Held spans by original trace id plus the trace mappings, each in insertion (= expiry) order."""

    def __init__(
        self,
        hold_seconds: float,
        mapping_ttl_seconds: float,
        max_held_spans: int,
        max_mappings: int,
        max_held_bytes: int = 1 << 62,
    ):
        self.hold_seconds = hold_seconds
        self.mapping_ttl_seconds = mapping_ttl_seconds
        self.max_held_spans = max_held_spans
        self.max_held_bytes = max_held_bytes
        self.max_mappings = max_mappings
        self._held: OrderedDict[bytes, _HeldTrace] = OrderedDict()
        self._mappings: OrderedDict[bytes, tuple[TraceMapping, float]] = OrderedDict()
        self.held_spans = 0
        self.held_bytes = 0
        self.mappings_evicted = 0

    @property
    def held_traces(self) -> int:
        return len(self._held)

    def fits(self, spans: int, cost: int) -> bool:
        """Whether ``spans`` more spans costing ``cost`` bytes stay within both bounds."""
        return self.held_spans + spans <= self.max_held_spans and self.held_bytes + cost <= self.max_held_bytes

    @property
    def mapping_count(self) -> int:
        return len(self._mappings)

    def lookup(self, trace_id: bytes, now: float) -> TraceMapping | None:
        """The live mapping of ``trace_id``, if any (an expired one is forgotten here)."""
        entry = self._mappings.get(trace_id)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._mappings[trace_id]
            return None
        return entry[0]

    def remember(self, trace_id: bytes, mapping: TraceMapping, now: float) -> None:
        """Keep ``mapping`` for the TTL; at the size bound the oldest mapping goes (counted)."""
        self._mappings[trace_id] = (mapping, now + self.mapping_ttl_seconds)
        self._mappings.move_to_end(trace_id)
        while len(self._mappings) > self.max_mappings:
            self._mappings.popitem(last=False)
            self.mappings_evicted += 1

    def hold(self, trace_id: bytes, fragments: list[Fragment], cost: int, now: float) -> None:
        """Add spans of a trace whose root is not known yet (``cost`` bytes in all); the caller made room first."""
        held = self._held.get(trace_id)
        if held is None:
            held = self._held[trace_id] = _HeldTrace(now)
        held.fragments.extend(fragments)
        held.cost += cost
        self.held_spans += len(fragments)
        self.held_bytes += cost

    def release(self, trace_id: bytes) -> list[Fragment]:
        """Take out every held span of ``trace_id`` (its root just showed up)."""
        held = self._held.pop(trace_id, None)
        if held is None:
            return []
        self._forget(held)
        return held.fragments

    def evict_oldest(self, spans: int, cost: int) -> list[tuple[bytes, list[Fragment]]]:
        """Take out the oldest held traces until ``spans`` more spans costing ``cost`` bytes fit the bounds."""
        evicted = []
        while self._held and not self.fits(spans, cost):
            trace_id, held = self._held.popitem(last=False)
            self._forget(held)
            evicted.append((trace_id, held.fragments))
        return evicted

    def _forget(self, held: _HeldTrace) -> None:
        self.held_spans -= len(held.fragments)
        self.held_bytes -= held.cost

    def expire(self, now: float) -> list[tuple[bytes, list[Fragment]]]:
        """Take out traces held longer than the window, and forget mappings past their TTL."""
        expired = []
        deadline = now - self.hold_seconds
        while self._held:
            trace_id, held = next(iter(self._held.items()))
            if held.first_seen > deadline:
                break
            del self._held[trace_id]
            self._forget(held)
            expired.append((trace_id, held.fragments))
        while self._mappings:
            trace_id, (_mapping, expires_at) = next(iter(self._mappings.items()))
            if expires_at > now:
                break
            del self._mappings[trace_id]
        return expired

    def drain(self) -> list[tuple[bytes, list[Fragment]]]:
        """Take out everything held (shutdown)."""
        drained = [(trace_id, held.fragments) for trace_id, held in self._held.items()]
        self._held.clear()
        self.held_spans = self.held_bytes = 0
        return drained

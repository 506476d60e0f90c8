"""The decision cache: where the spans of each original trace go, remembered for a TTL.

Apart from the span store on purpose (like the collector's tail sampling keeps its decision cache apart from
its trace store): the deciding stage only *reads* it, through :meth:`DecisionCache.get`; the apply stage
writes what was decided. A decision is refreshed every time a request uses it, so a job that keeps sending
spans keeps its decision however long it runs. Bounded; no clocks are read here (``now`` is passed in).

It also keeps the *waiting* claims: a Celery attempt whose link points into the previous attempt's trace before
that one is decided waits for it (its spans wait in the span store, which bounds these too).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple


class TraceMapping(NamedTuple):
    """What to do with the spans of one original trace.

    ``target_trace_id`` is None for a trace known to need nothing (its root has no job link); otherwise the
    spans move into that trace and a parentless span gets ``link_span_id`` as parent. Kept small on purpose:
    the cache holds one per remembered attempt trace (plain traces share :data:`PASS_THROUGH`); a named tuple,
    because the consume path makes one per attempt trace it sees and a tuple is made in C.
    """

    target_trace_id: bytes | None
    link_span_id: bytes = b""


PASS_THROUGH = TraceMapping(target_trace_id=None)


class DecisionCache:
    """Original trace id -> :class:`TraceMapping`, in expiry order; the oldest go first when full (counted)."""

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[TraceMapping, float]] = OrderedDict()
        self.evicted = 0
        self._waiting: dict[bytes, TraceMapping] = {}
        self._waiting_on: dict[bytes, set[bytes]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, trace_id: bytes, now: float) -> TraceMapping | None:
        """The live decision for ``trace_id``, if any. Read-only: expired entries are swept by :meth:`expire`."""
        entry = self._entries.get(trace_id)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def remember(self, trace_id: bytes, mapping: TraceMapping, now: float) -> None:
        """Keep (or refresh) ``mapping`` for the TTL; at the size bound the oldest entry goes."""
        self.remember_all({trace_id: mapping}, now)

    @property
    def anyone_waiting(self) -> bool:
        return bool(self._waiting)

    def wait(self, trace_id: bytes, mapping: TraceMapping) -> None:
        """Keep a claim whose link points into a trace not decided yet (its spans wait in the span store)."""
        target = mapping.target_trace_id
        assert target is not None
        self._waiting[trace_id] = mapping
        self._waiting_on.setdefault(target, set()).add(trace_id)

    def waiting_on(self, target_trace_id: bytes) -> set[bytes]:
        """The traces whose claims wait for ``target_trace_id``'s decision."""
        return self._waiting_on.get(target_trace_id, set())

    def stop_waiting(self, trace_id: bytes) -> TraceMapping | None:
        """Take back a waiting claim (its target was decided, or its spans leave the store)."""
        mapping = self._waiting.pop(trace_id, None)
        if mapping is not None and mapping.target_trace_id is not None:
            waiters = self._waiting_on.get(mapping.target_trace_id)
            if waiters is not None:
                waiters.discard(trace_id)
                if not waiters:
                    del self._waiting_on[mapping.target_trace_id]
        return mapping

    def remember_all(self, decided: dict[bytes, TraceMapping], now: float) -> None:
        """:meth:`remember` for every decision of a request, in one call (the consume path's per-trace cost)."""
        entries = self._entries
        expires_at = now + self.ttl_seconds
        for trace_id, mapping in decided.items():
            if trace_id in entries:
                entries.move_to_end(trace_id)
            entries[trace_id] = (mapping, expires_at)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evicted += 1

    def expire(self, now: float) -> None:
        """Forget decisions past their TTL (they are in expiry order, so this stops at the first live one)."""
        entries = self._entries
        while entries:
            trace_id, (_mapping, expires_at) = next(iter(entries.items()))
            if expires_at > now:
                break
            del entries[trace_id]

"""The decision stage, pure: what a request says about its traces plus the cache's answers in, decisions out.

Nothing here reads a clock or changes state; the stitcher applies the decisions afterwards (remembers them,
releases held spans, moves spans). That keeps every rule testable on plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from jobtrail.processor.decision_cache import PASS_THROUGH, TraceMapping

Known = Callable[[bytes], "TraceMapping | None"]
"""The decision cache's answer for a trace id (None: nothing remembered)."""


def decide(
    claims: Mapping[bytes, TraceMapping | None], trace_ids: Iterable[bytes], known: Known
) -> dict[bytes, TraceMapping]:
    """Decisions for the traces of one request; a trace missing from the result is undecided (its spans wait).

    ``claims`` holds, per trace, the mapping its deciding span in this request carries, or None when the request
    holds only the trace's plain root (no deciding link): such a trace passes through unless the cache already
    knows better (its pickup marker came earlier). Every other trace of ``trace_ids`` follows the cache.
    """
    decided = {
        trace_id: claim if claim is not None else (known(trace_id) or PASS_THROUGH)
        for trace_id, claim in claims.items()
    }
    resolved = {trace_id: _final(trace_id, mapping, decided, known) for trace_id, mapping in decided.items()}
    for trace_id in trace_ids:
        if trace_id not in resolved:
            mapping = known(trace_id)
            if mapping is not None:
                resolved[trace_id] = mapping
    return resolved


def _final(trace_id: bytes, mapping: TraceMapping, decided: Mapping[bytes, TraceMapping], known: Known) -> TraceMapping:
    """Follow a job enqueued by another job (or a Celery retry, published inside the previous attempt): when the
    link's trace itself moves, go where that one goes. The parent stays the enqueuing span (span ids never change,
    so it is found in the final trace). Decisions are remembered resolved, so chains are short; a cycle (only
    hostile input makes one) stops at the first repeat. When the enqueuing trace's own decision is not known
    yet, the link's trace is used as it is (still linked)."""
    target = mapping.target_trace_id
    if target is None:
        return mapping
    seen = {trace_id, target}
    while True:
        onward = decided.get(target) or known(target)
        if onward is None or onward.target_trace_id is None or onward.target_trace_id in seen:
            break
        target = onward.target_trace_id
        seen.add(target)
    return mapping if target == mapping.target_trace_id else TraceMapping(target, mapping.link_span_id)

"""The decision stage, pure: what a request says about its traces plus the cache's answers in, decisions out.

Nothing here reads a clock or changes state; the stitcher applies the decisions afterwards (remembers them,
releases held spans, moves spans). That keeps every rule testable on plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping

from jobtrail.processor.decision_cache import PASS_THROUGH, TraceMapping

Known = Callable[[bytes], "TraceMapping | None"]
"""The decision cache's answer for a trace id (None: nothing remembered)."""


def decide(
    claims: Mapping[bytes, TraceMapping | None],
    trace_ids: Iterable[bytes],
    known: Known,
    patient: Container[bytes] = (),
) -> tuple[dict[bytes, TraceMapping], dict[bytes, TraceMapping]]:
    """Decisions for the traces of one request, and the claims that wait; a trace in neither is undecided.

    ``claims`` holds, per trace, the mapping its deciding span in this request carries, or None when the request
    holds only the trace's plain root (no deciding link): such a trace passes through unless the cache already
    knows better (its pickup marker came earlier). Every other trace of ``trace_ids`` follows the cache. A claim
    of a ``patient`` trace whose link points into a trace nobody has decided yet waits (second result) instead
    of going there as it is: that trace may itself move (a Celery retry sent from inside the previous attempt).
    """
    decided = {
        trace_id: claim if claim is not None else (known(trace_id) or PASS_THROUGH)
        for trace_id, claim in claims.items()
    }
    resolved: dict[bytes, TraceMapping] = {}
    waiting: dict[bytes, TraceMapping] = {}
    for trace_id, mapping in decided.items():
        if mapping.target_trace_id is None:  # passes through: nothing to follow (most traces)
            resolved[trace_id] = mapping
            continue
        final, settled = _final(trace_id, mapping, decided, known)
        if settled or trace_id not in patient:
            resolved[trace_id] = final
        else:
            waiting[trace_id] = mapping
    for trace_id in trace_ids:
        if trace_id not in resolved and trace_id not in waiting:
            known_mapping = known(trace_id)
            if known_mapping is not None:
                resolved[trace_id] = known_mapping
    return resolved, waiting


def _final(
    trace_id: bytes, mapping: TraceMapping, decided: Mapping[bytes, TraceMapping], known: Known
) -> tuple[TraceMapping, bool]:
    """Follow a job enqueued by another job (or a Celery retry, published inside the previous attempt): when the
    link's trace itself moves, go where that one goes. The parent stays the enqueuing span (span ids never change,
    so it is found in the final trace). Decisions are remembered resolved, so chains are short; a cycle (only
    hostile input makes one) stops at the first repeat. When the enqueuing trace's own decision is not known
    yet, the link's trace is used as it is (still linked), and ``settled`` is False."""
    target = mapping.target_trace_id
    if target is None:
        return mapping, True
    seen = {trace_id, target}
    while True:
        onward = decided.get(target) or known(target)
        if onward is None or onward.target_trace_id is None or onward.target_trace_id in seen:
            break
        target = onward.target_trace_id
        seen.add(target)
    final = mapping if target == mapping.target_trace_id else TraceMapping(target, mapping.link_span_id)
    return final, onward is not None

"""What travels in ``job.meta``: the creation context, and the bookkeeping that spans attempts.

The creation context is written once, when the job is created, and never again: retries,
scheduler promotion and dependency release keep the job's meta as it is. The attempt record
rides along with the job when RQ saves it for a retry, so it costs no Redis round trip.
``job.meta`` is anyone's to write, so every value read back is checked (type, finite, in range):
what is unusable is dropped, the rest is kept, and the caller logs one warning naming the job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from jobtrail.conventions import JOB_META_ATTEMPTS_KEY, JOB_META_CARRIER_KEY
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, TraceFlags

MAX_ATTEMPTS = 1_000_000
"""More attempts than any retry policy makes: a larger count is garbage, not history."""
MAX_EPOCH_S = 2**32
"""Due times past 2106 are garbage (and beyond ``datetime``'s range soon after)."""
MAX_CARRIER_ENTRIES = 16
MAX_CARRIER_VALUE = 8192
"""The W3C baggage header limit; tracecontext values are far shorter."""
MAX_ERROR_TEXT = 1024
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")


@dataclass
class MetaProblems:
    """What was found unusable in one job's meta: reported once, in one warning."""

    found: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        self.found.append(what)

    def __bool__(self) -> bool:
        return bool(self.found)

    def __str__(self) -> str:
        return "; ".join(self.found)


def inject_creation_context(meta: MutableMapping[str, Any], context: Context | None = None) -> None:
    """Write ``context`` (default: the current one) into ``meta`` through the global propagator, unless it has one."""
    if JOB_META_CARRIER_KEY in meta:
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    if carrier:
        meta[JOB_META_CARRIER_KEY] = carrier


def extract_creation_context(meta: Any, problems: MetaProblems) -> Context | None:
    """The job's creation context (span context and baggage), or None when absent or unusable."""
    raw = meta.get(JOB_META_CARRIER_KEY) if isinstance(meta, Mapping) else None
    if raw is None:
        return None
    if (
        not isinstance(raw, Mapping)
        or len(raw) > MAX_CARRIER_ENTRIES
        or not all(isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_CARRIER_VALUE for k, v in raw.items())
    ):
        problems.add(f"{JOB_META_CARRIER_KEY}: not a small dict of strings")
        return None
    extracted = propagate.extract(dict(raw))
    if "traceparent" in raw and not trace.get_current_span(extracted).get_span_context().is_valid:
        problems.add(f"{JOB_META_CARRIER_KEY}: malformed traceparent")
        return None
    return extracted


@dataclass
class AttemptRecord:
    """The attempts before this one: how many, the last one's span, whether it ended the run, first error, due time."""

    attempts: int = 0
    last_span: SpanContext | None = None
    final: bool = False
    """The last attempt ended the job's run (failed, stopped or abandoned for good): a next one follows a requeue."""
    first_error_type: str | None = None
    first_error_message: str | None = None
    runnable_at: float | None = None
    """Epoch seconds: the retry's or ``enqueue_at``'s due time (the scheduler promotes a little later)."""

    @classmethod
    def read(cls, meta: Any, problems: MetaProblems) -> AttemptRecord:
        """The record in ``meta``, keeping every field that is usable and noting the others."""
        raw = meta.get(JOB_META_ATTEMPTS_KEY) if isinstance(meta, Mapping) else None
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            problems.add(f"{JOB_META_ATTEMPTS_KEY}: not a dict")
            return cls()
        record = cls()
        attempts = raw.get("attempts", 0)
        if _is_int(attempts) and 0 <= attempts <= MAX_ATTEMPTS:
            record.attempts = attempts
        else:
            problems.add(f"{JOB_META_ATTEMPTS_KEY}.attempts: not an attempt count")
        if raw.get("last_span") is not None:
            record.last_span = _span_context(raw["last_span"])
            if record.last_span is None:
                problems.add(f"{JOB_META_ATTEMPTS_KEY}.last_span: not a valid span context")
        final = raw.get("final", False)
        if isinstance(final, bool):
            record.final = final
        else:
            problems.add(f"{JOB_META_ATTEMPTS_KEY}.final: not a boolean")
        for name in ("first_error_type", "first_error_message"):
            value = raw.get(name)
            if isinstance(value, str):
                setattr(record, name, value[:MAX_ERROR_TEXT])
            elif value is not None:
                problems.add(f"{JOB_META_ATTEMPTS_KEY}.{name}: not a string")
        runnable_at = raw.get("runnable_at")
        if _is_epoch(runnable_at):
            record.runnable_at = float(runnable_at)
        elif runnable_at is not None:
            problems.add(f"{JOB_META_ATTEMPTS_KEY}.runnable_at: not a time")
        return record

    def write(self, meta: MutableMapping[str, Any]) -> None:
        meta[JOB_META_ATTEMPTS_KEY] = {
            "attempts": self.attempts,
            "last_span": None
            if self.last_span is None
            else {
                "trace_id": trace.format_trace_id(self.last_span.trace_id),
                "span_id": trace.format_span_id(self.last_span.span_id),
                "flags": int(self.last_span.trace_flags),
            },
            "final": self.final,
            "first_error_type": self.first_error_type,
            "first_error_message": self.first_error_message,
            "runnable_at": self.runnable_at,
        }


def mark_operator_requeue(meta: MutableMapping[str, Any], attempts_so_far: int) -> None:
    """Tell the next attempt that it follows an operator requeue of a run that made ``attempts_so_far`` attempts.

    RQ's own requeue of a failed job needs no help (the final attempt kept its record); a job that *returned*
    (RQ calls it finished, e.g. partially succeeded) left no record, since a success costs no extra Redis write.
    Whoever puts such a job back calls this before RQ saves it, so attempt numbers go on and are never repeated.
    """
    record = AttemptRecord.read(meta, MetaProblems())
    record.attempts = min(max(record.attempts, attempts_so_far), MAX_ATTEMPTS)
    record.final = True
    record.runnable_at = None
    record.write(meta)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_epoch(value: Any) -> TypeGuard[float]:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and 0 < value < MAX_EPOCH_S
    except OverflowError:  # an int too large for a float
        return False


def _span_context(raw: Any) -> SpanContext | None:
    """A remote span context from its stored form, or None when any part is unusable."""
    if not isinstance(raw, Mapping):
        return None
    trace_id, span_id, flags = raw.get("trace_id"), raw.get("span_id"), raw.get("flags", 0)
    if not (isinstance(trace_id, str) and _TRACE_ID.fullmatch(trace_id) and isinstance(span_id, str)):
        return None
    if not (_SPAN_ID.fullmatch(span_id) and _is_int(flags) and 0 <= flags <= 0xFF):
        return None
    context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(flags))
    return context if context.is_valid else None

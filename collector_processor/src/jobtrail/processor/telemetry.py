"""The processor's own counters: one registry, rendered as Prometheus text at ``GET /metrics`` and logged.

Every span that comes in ends up in exactly one of: rejected, stitched, forwarded unchanged (with a reason),
or still held, so ``received == rejected + stitched + forwarded_unchanged + held`` at any quiet moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

SPANS_RECEIVED = "jobtrail_processor_spans_received_total"
SPANS_REJECTED = "jobtrail_processor_spans_rejected_total"
SPANS_STITCHED = "jobtrail_processor_spans_stitched_total"
SPANS_FORWARDED_UNCHANGED = "jobtrail_processor_spans_forwarded_unchanged_total"
SPANS_HELD = "jobtrail_processor_spans_held"
HELD_BYTES = "jobtrail_processor_held_bytes"
HELD_TRACES = "jobtrail_processor_held_traces"
TRACE_MAPPINGS = "jobtrail_processor_trace_mappings"
TRACE_MAPPINGS_EVICTED = "jobtrail_processor_trace_mappings_evicted_total"
REQUESTS_REFUSED = "jobtrail_processor_requests_refused_total"
SPANS_EXPORTED = "jobtrail_processor_spans_exported_total"
EXPORT_FAILURES = "jobtrail_processor_export_failures_total"
SPANS_EXPORT_DROPPED = "jobtrail_processor_spans_export_dropped_total"
EXPORT_QUEUE_SPANS = "jobtrail_processor_export_queue_spans"
EXPORT_QUEUE_BYTES = "jobtrail_processor_export_queue_bytes"
EXPORT_BATCH_LIMIT_BYTES = "jobtrail_processor_export_batch_limit_bytes"
EXPORT_STALLED = "jobtrail_processor_export_stalled"
EXPORT_THREAD_RESTARTS = "jobtrail_processor_export_thread_restarts_total"

REFUSED_BAD_REQUEST = "bad_request"
REFUSED_TOO_LARGE = "too_large"
REFUSED_UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
REFUSED_METHOD_NOT_ALLOWED = "method_not_allowed"
REFUSED_OVERLOADED = "overloaded"
REFUSED_REASONS = (
    REFUSED_BAD_REQUEST,
    REFUSED_TOO_LARGE,
    REFUSED_UNSUPPORTED_MEDIA_TYPE,
    REFUSED_METHOD_NOT_ALLOWED,
    REFUSED_OVERLOADED,
)

HELP = {
    SPANS_RECEIVED: ("counter", "Spans received by the OTLP receivers."),
    SPANS_REJECTED: ("counter", "Spans refused one by one (invalid ids), reported as partial success."),
    SPANS_STITCHED: ("counter", "Spans moved into the trace that enqueued their job."),
    SPANS_FORWARDED_UNCHANGED: ("counter", "Spans forwarded as they came, by reason."),
    SPANS_HELD: ("gauge", "Spans waiting for their trace's root."),
    HELD_BYTES: ("gauge", "Estimated memory of the held spans (what max_held_bytes bounds)."),
    HELD_TRACES: ("gauge", "Traces with spans waiting for their root."),
    TRACE_MAPPINGS: ("gauge", "Original trace ids with a known decision (stitch target or pass-through)."),
    TRACE_MAPPINGS_EVICTED: ("counter", "Trace mappings dropped early because the mapping table was full."),
    REQUESTS_REFUSED: ("counter", "Export requests refused as a whole, by reason."),
    SPANS_EXPORTED: ("counter", "Spans the next hop accepted, by exporter."),
    EXPORT_FAILURES: ("counter", "Export attempts that failed (retried when the error allows), by exporter."),
    SPANS_EXPORT_DROPPED: ("counter", "Spans given up on (permanent error or shutdown timeout), by exporter."),
    EXPORT_QUEUE_SPANS: ("gauge", "Spans waiting in an exporter's queue, by exporter."),
    EXPORT_QUEUE_BYTES: ("gauge", "Serialized bytes waiting in an exporter's queue, by exporter."),
    EXPORT_BATCH_LIMIT_BYTES: ("gauge", "Current batch size limit (halves on a timeout, grows back), by exporter."),
    EXPORT_STALLED: (
        "gauge",
        "1 while an exporter is unhealthy (loop gone, nothing delivered for export_stall_seconds, disk refusing).",
    ),
    EXPORT_THREAD_RESTARTS: ("counter", "Export loops restarted after an unexpected error, by exporter."),
}

Labels = tuple[tuple[str, str], ...]


class Telemetry:
    """Thread-safe counters plus gauges read on demand from the components that own the numbers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, Labels], float] = {}
        self._gauges: list[tuple[str, Labels, Callable[[], float]]] = []

    def add(self, name: str, value: float = 1, **labels: str) -> None:
        if not value:
            return
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + value

    def declare(self, name: str, **labels: str) -> None:
        """Make a series visible at zero before anything happened (a scraper sees 0, not a gap)."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values.setdefault(key, 0)

    def gauge(self, name: str, read: Callable[[], float], **labels: str) -> None:
        """Register a gauge whose value ``read()`` returns at scrape time."""
        self._gauges.append((name, tuple(sorted(labels.items())), read))

    def value(self, name: str, **labels: str) -> float:
        """One series' value; without labels, the sum over every series of ``name``."""
        wanted = tuple(sorted(labels.items()))
        total = 0.0
        for (series_name, series_labels), series_value in self.samples():
            if series_name == name and (not wanted or series_labels == wanted):
                total += series_value
        return total

    def samples(self) -> list[tuple[tuple[str, Labels], float]]:
        with self._lock:
            samples = list(self._values.items())
        samples.extend(((name, labels), float(read())) for name, labels, read in self._gauges)
        return samples

    def render_prometheus(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        by_name: dict[str, list[tuple[Labels, float]]] = {name: [] for name in HELP}
        for (name, labels), value in self.samples():
            by_name.setdefault(name, []).append((labels, value))
        lines = []
        for name, series in by_name.items():
            kind, text = HELP.get(name, ("untyped", ""))
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in sorted(series):
                label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
                lines.append(f"{name}{{{label_text}}} {_number(value)}" if labels else f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """One log line with every series, for operators without a scraper."""
        parts = []
        for (name, labels), value in sorted(self.samples()):
            short = name.removeprefix("jobtrail_processor_")
            label_text = ",".join(f"{key}={val}" for key, val in labels)
            parts.append(f"{short}{{{label_text}}}={_number(value)}" if labels else f"{short}={_number(value)}")
        return " ".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

"""The trail view: one user action told as a timeline, from the processor's file or Jaeger's query API.

Usage (support)::

    jobtrail trail req_8f14e45fceea167a              # the embedded demo's file
    jobtrail trail <trace id> --jaeger http://127.0.0.1:16686

Usage (code)::

    from jobtrail.trail import FileSource, Lookup, build_timeline

    found = FileSource("var/jobtrail/traces.jsonl").find(Lookup.parse("req_8f14e45fceea167a"))
    print("\\n".join(build_timeline(found.spans).lines()))
"""

from __future__ import annotations

from jobtrail.trail.model import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    TrailEvent,
    TrailLink,
    TrailSpan,
    spans_from_request,
)
from jobtrail.trail.sources import FileSource, JaegerSource, Lookup, SourceError, TrailNotFound
from jobtrail.trail.timeline import BrokenStep, Timeline, build_timeline

__all__ = [
    "KIND_CLIENT",
    "KIND_CONSUMER",
    "KIND_INTERNAL",
    "KIND_PRODUCER",
    "KIND_SERVER",
    "BrokenStep",
    "FileSource",
    "JaegerSource",
    "Lookup",
    "SourceError",
    "Timeline",
    "TrailEvent",
    "TrailLink",
    "TrailNotFound",
    "TrailSpan",
    "build_timeline",
    "spans_from_request",
]

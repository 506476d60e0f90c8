"""The contract between receivers and the pipeline: consume a request, or refuse it as retryable."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Overloaded(Exception):
    """The export queue has no room: the sender should retry after ``retry_after`` seconds (nothing was kept)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


Consume = Callable[[ExportTraceServiceRequest, "bytes | None"], tuple[int, str]]
"""``consume(request, original_bytes) -> (rejected_spans, message)``; raises :class:`Overloaded`."""

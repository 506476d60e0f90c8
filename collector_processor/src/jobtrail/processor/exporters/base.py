"""The queue and retry loop every exporter shares; a subclass only knows how to send one payload.

Payloads are serialized ``ExportTraceServiceRequest`` bytes. Protobuf defines the concatenation of two
serialized messages as their merge (repeated fields append), so queued requests are sent as one batch by
joining their bytes: no re-parsing on the way out.

Retries follow the OTLP spec: only errors it calls retryable are retried, with exponential backoff and jitter,
or after the delay the server asked for (Retry-After / RetryInfo). A retryable failure keeps the batch at the
head of the queue; while the queue is full the receivers refuse new data, so senders retry instead of losing it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque

from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.telemetry import (
    EXPORT_FAILURES,
    EXPORT_QUEUE_BYTES,
    EXPORT_QUEUE_SPANS,
    SPANS_EXPORT_DROPPED,
    SPANS_EXPORTED,
    Telemetry,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

logger = logging.getLogger("jobtrail.processor.exporters")


class RetryableExportError(Exception):
    """The next hop may accept the same data later; ``delay`` is what it asked to wait, if anything."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentExportError(Exception):
    """The next hop will never accept this data (the spec says: do not retry)."""


class QueuedExporter:
    """A bounded queue (counted in spans) drained by one thread that sends with retries."""

    def __init__(self, url: str, config: ProcessorConfig, telemetry: Telemetry) -> None:
        self.url = url
        self.config = config
        self.telemetry = telemetry
        self._queue: deque[tuple[bytes, int]] = deque()
        self._queued_spans = 0
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"export {url}", daemon=True)
        for name in (SPANS_EXPORTED, EXPORT_FAILURES, SPANS_EXPORT_DROPPED):
            telemetry.declare(name, exporter=url)
        telemetry.gauge(EXPORT_QUEUE_SPANS, lambda: self._queued_spans, exporter=url)
        telemetry.gauge(EXPORT_QUEUE_BYTES, lambda: self._queued_bytes, exporter=url)

    # --- what a concrete exporter provides -------------------------------------------------
    def send(self, payload: bytes, timeout: float) -> int:
        """Send one serialized request; return how many spans the next hop rejected (partial success).

        Raise :class:`RetryableExportError` or :class:`PermanentExportError` on failure.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and files once the queue is drained."""

    # --- queue --------------------------------------------------------------------------------
    def has_room(self, spans: int, size: int) -> bool:
        """Room for ``spans`` more spans of ``size`` bytes; an empty queue takes any request (one bigger than the
        bounds could never pass otherwise)."""
        return self._queued_spans == 0 or (
            self._queued_spans + spans <= self.config.queue_max_spans
            and self._queued_bytes + size <= self.config.queue_max_bytes
        )

    def put(self, payload: bytes, spans: int) -> None:
        """Queue data the processor has already accepted (admission was checked with :meth:`has_room`)."""
        with self._cond:
            self._queue.append((payload, spans))
            self._queued_spans += spans
            self._queued_bytes += len(payload)
            self._cond.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Send what is queued, for at most ``timeout`` seconds; anything left after that is counted as dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join()
        self.close()

    def _take_batch(self) -> tuple[bytes, int] | None:
        """Block for the next batch: queued payloads joined up to the batch size; None when closed and empty."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            limit = self.config.export_batch_max_bytes
            if len(self._queue[0][0]) > limit:
                # Rare: one request (plus the held spans it released) over the batch size. Sent whole, a next
                # hop with the usual 4 MiB limit would refuse it for good, so it goes out in pieces.
                payload, _count = self._queue.popleft()
                pieces = split_request(payload, limit)
                self._queue.extendleft(reversed(pieces))
                self._queued_bytes += sum(len(piece) for piece, _spans in pieces) - len(payload)
            parts = []
            size = spans = 0
            while self._queue and (not parts or size + len(self._queue[0][0]) <= limit):
                payload, count = self._queue.popleft()
                parts.append(payload)
                size += len(payload)
                spans += count
            return b"".join(parts), spans

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            payload, spans = batch
            self._deliver(payload, spans)
            with self._cond:
                self._queued_spans -= spans
                self._queued_bytes -= len(payload)

    def _deliver(self, payload: bytes, spans: int) -> None:
        """Send one batch until it is accepted, refused for good, or the shutdown deadline passes."""
        attempt = 0
        while True:
            try:
                rejected = self.send(payload, self.config.export_timeout_seconds)
            except RetryableExportError as error:
                self.telemetry.add(EXPORT_FAILURES, exporter=self.url)
                delay = error.delay if error.delay is not None else self._backoff(attempt)
                attempt += 1
                logger.warning("export to %s failed (%s); retrying %d spans in %.2fs", self.url, error, spans, delay)
                if self._abort.wait(delay):
                    self._drop(spans, "shutdown deadline passed while the next hop kept failing")
                    self._drop_queued()
                    return
                continue
            except PermanentExportError as error:
                self.telemetry.add(EXPORT_FAILURES, exporter=self.url)
                self._drop(spans, f"the next hop refused it permanently: {error}")
                return
            if rejected:
                logger.warning("%s rejected %d of %d spans (partial success)", self.url, rejected, spans)
                self.telemetry.add(SPANS_EXPORT_DROPPED, rejected, exporter=self.url)
            self.telemetry.add(SPANS_EXPORTED, spans - rejected, exporter=self.url)
            return

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with +-20% jitter, capped."""
        base = self.config.retry_initial_backoff_seconds * (2**attempt)
        return min(base, self.config.retry_max_backoff_seconds) * random.uniform(0.8, 1.2)

    def _drop(self, spans: int, why: str) -> None:
        logger.error("dropping %d spans for %s: %s", spans, self.url, why)
        self.telemetry.add(SPANS_EXPORT_DROPPED, spans, exporter=self.url)

    def _drop_queued(self) -> None:
        with self._cond:
            left = sum(count for _payload, count in self._queue)
            self._queued_bytes -= sum(len(payload) for payload, _count in self._queue)
            self._queue.clear()
            self._queued_spans -= left
        if left:
            self._drop(left, "shutdown deadline passed before they could be sent")


def split_request(payload: bytes, max_bytes: int) -> list[tuple[bytes, int]]:
    """Cut one serialized request into requests of at most about ``max_bytes`` (span granularity, each span with
    its resource and scope), as ``(bytes, spans)``. A single span bigger than that travels alone."""
    pieces: list[tuple[bytes, int]] = []
    piece, size, spans = ExportTraceServiceRequest(), 0, 0
    for resource_spans in ExportTraceServiceRequest.FromString(payload).resource_spans:
        shell = resource_spans.ByteSize() - sum(scope.ByteSize() for scope in resource_spans.scope_spans)
        for scope_spans in resource_spans.scope_spans:
            scope_shell = scope_spans.ByteSize() - sum(span.ByteSize() for span in scope_spans.spans)
            target_scope = None
            for span in scope_spans.spans:
                span_size = span.ByteSize() + 16
                if spans and size + span_size > max_bytes:
                    pieces.append((piece.SerializeToString(), spans))
                    piece, size, spans, target_scope = ExportTraceServiceRequest(), 0, 0, None
                if target_scope is None:
                    target_resource = piece.resource_spans.add(
                        resource=resource_spans.resource, schema_url=resource_spans.schema_url
                    )
                    target_scope = target_resource.scope_spans.add(
                        scope=scope_spans.scope, schema_url=scope_spans.schema_url
                    )
                    size += shell + scope_shell + 16
                target_scope.spans.append(span)
                size += span_size
                spans += 1
    if spans:
        pieces.append((piece.SerializeToString(), spans))
    return pieces

"""The queue and retry loop every exporter shares; a subclass only knows how to send one payload.

Payloads are serialized ``ExportTraceServiceRequest`` bytes. Protobuf defines the concatenation of two
serialized messages as their merge (repeated fields append), so queued requests are sent as one batch by
joining their bytes: no re-parsing on the way out.

Retries follow the OTLP spec: only errors it calls retryable are retried, with exponential backoff and jitter,
or after the delay the server asked for (Retry-After / RetryInfo), clamped to
[``retry_initial_backoff_seconds``, ``retry_max_backoff_seconds``] so that ``0``, a date in the past or a year
from now neither spins nor stalls. A batch stays at the head of the queue until the next hop took it (or refused
it for good); while the queue is full the receivers refuse new data, so senders retry instead of losing it.

The batch size limit starts at ``INITIAL_BATCH_BYTES`` (a slow start: the first batch to a slow next hop must
not be the biggest). A batch that times out is cut in two and the limit halves (down to one span per batch); a
batch that filled at least half the limit and went through in under half the timeout lets it grow by a quarter, up to
``export_batch_max_bytes`` (a next hop whose time grows with the batch never sees a batch it cannot take in time).
So the batch size follows what the next hop sustains, and the only duplicates are the parts of a timed-out batch
the next hop had processed before the deadline. While the next hop is unreachable, the wait between retries is cut
short as soon as it answers again (a TCP connect for HTTP, the channel's READY state for gRPC, probed every
``RECONNECT_PROBE_SECONDS``). The export thread is supervised: an unexpected error is logged, counted
(``export_thread_restarts_total``) and the loop starts again with the same batch.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import re
import threading
import time
from collections import deque
from typing import NamedTuple

from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.exporters.disk_queue import DiskQueue
from jobtrail.processor.telemetry import (
    EXPORT_BATCH_LIMIT_BYTES,
    EXPORT_FAILURES,
    EXPORT_QUEUE_BYTES,
    EXPORT_QUEUE_SPANS,
    EXPORT_STALLED,
    EXPORT_THREAD_RESTARTS,
    SPANS_EXPORT_DROPPED,
    SPANS_EXPORTED,
    Telemetry,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

logger = logging.getLogger("jobtrail.processor.exporters")

INITIAL_BATCH_BYTES = 64 * 1024
"""Where the adaptive batch limit starts (then up to ``export_batch_max_bytes`` after fast, full batches)."""
RECONNECT_PROBE_SECONDS = 1.0
"""While the next hop is unreachable, how often to check whether it is back."""


class RetryableExportError(Exception):
    """The next hop may accept the same data later; ``delay`` is what it asked to wait, if anything.

    ``unreachable``: no connection could be made (nothing was sent), so a reconnect ends the wait early.
    """

    def __init__(self, message: str, delay: float | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.delay = delay
        self.unreachable = unreachable


class ExportTimeout(RetryableExportError):
    """No answer within ``export_timeout_seconds``: the next hop may have processed part of the batch."""


class PermanentExportError(Exception):
    """The next hop will never accept this data (the spec says: do not retry)."""


class _Entry(NamedTuple):
    payload: bytes
    spans: int
    seq: int | None
    """Disk sequence number committed once this entry is delivered (None: not the last piece of a record)."""


class QueuedExporter:
    """A bounded queue (counted in spans and bytes, optionally on disk) drained by one supervised thread."""

    def __init__(self, url: str, config: ProcessorConfig, telemetry: Telemetry) -> None:
        self.url = url
        self.config = config
        self.telemetry = telemetry
        self._queue: deque[_Entry] = deque()
        self._queued_spans = 0
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._batch_limit = min(INITIAL_BATCH_BYTES, config.export_batch_max_bytes)
        self._busy_since = time.monotonic()
        self._disk_error: str | None = None
        self._thread = threading.Thread(target=self._supervise, name=f"export {url}", daemon=True)
        self.disk = DiskQueue(queue_directory(config.queue_dir, url)) if config.queue_dir else None
        if self.disk is not None:
            for seq, payload, spans in self.disk.replay():
                self._append(_Entry(payload, spans, seq))
            if self._queue:
                logger.info("%s: %d spans from %s to send first", url, self._queued_spans, self.disk.directory)
        for name in (SPANS_EXPORTED, EXPORT_FAILURES, SPANS_EXPORT_DROPPED, EXPORT_THREAD_RESTARTS):
            telemetry.declare(name, exporter=url)
        telemetry.gauge(EXPORT_QUEUE_SPANS, lambda: self._queued_spans, exporter=url)
        telemetry.gauge(EXPORT_QUEUE_BYTES, lambda: self._queued_bytes, exporter=url)
        telemetry.gauge(EXPORT_BATCH_LIMIT_BYTES, lambda: self._batch_limit, exporter=url)
        telemetry.gauge(EXPORT_STALLED, lambda: int(bool(self.problems(time.monotonic()))), exporter=url)

    # --- what a concrete exporter provides -------------------------------------------------
    def send(self, payload: bytes, timeout: float) -> int:
        """Send one serialized request; return how many spans the next hop rejected (partial success).

        Raise :class:`RetryableExportError` (:class:`ExportTimeout` for a timeout) or :class:`PermanentExportError`.
        """
        raise NotImplementedError

    def reachable(self) -> bool:
        """Whether an unreachable next hop answers again (checked while waiting to retry)."""
        return False

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
        """Queue data the processor has already accepted (admission was checked with :meth:`has_room`).

        With ``queue_dir``, the payload is on disk when this returns, unless the disk refused it (full, read-only):
        then it is queued in memory and :meth:`problems` reports it until a write succeeds again.
        """
        with self._cond:
            seq = None
            if self.disk is not None:
                try:
                    seq = self.disk.append(payload, spans)
                    self._disk_error = None
                except OSError as error:
                    # Kept in memory (not lost while the process lives); /healthz and the log say so.
                    self._disk_error = f"cannot write {self.disk.directory}: {error}"
                    logger.error("%s; %d spans queued in memory only", self._disk_error, spans)
            self._append(_Entry(payload, spans, seq))
            self._cond.notify()

    def _append(self, entry: _Entry) -> None:
        if not self._queue:
            self._busy_since = time.monotonic()
        self._queue.append(entry)
        self._queued_spans += entry.spans
        self._queued_bytes += len(entry.payload)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Send what is queued, for at most ``timeout`` seconds; what is left is counted as dropped, or, with
        ``queue_dir``, stays on disk for the next start."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join()
        self.close()
        if self.disk is not None:
            self.disk.close()

    def problems(self, now: float) -> list[str]:
        """Why this exporter is unhealthy: its thread is gone, or nothing got through for ``export_stall_seconds``."""
        if self._thread.ident is not None and not self._thread.is_alive() and not self._closing:
            return [f"export thread for {self.url} is not running"]
        problems = [self._disk_error] if self._disk_error else []
        if self._queued_spans and now - self._busy_since > self.config.export_stall_seconds:
            waited = now - self._busy_since
            problems.append(f"no export to {self.url} succeeded for {waited:.0f}s ({self._queued_spans} spans queued)")
        return problems

    # --- the export thread ----------------------------------------------------------------------
    def _supervise(self) -> None:
        """Run the export loop; an unexpected error restarts it (the batch it was sending is still queued)."""
        restarts = 0
        while True:
            try:
                self._run()
                return
            except Exception:
                restarts += 1
                self.telemetry.add(EXPORT_THREAD_RESTARTS, exporter=self.url)
                logger.exception("export loop for %s failed; restarting it (restart %d)", self.url, restarts)
                if self._abort.wait(self._backoff(min(restarts - 1, 16))):
                    self._give_up()
                    return

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not self._deliver(*batch):
                return

    def _next_batch(self) -> tuple[int, bytes, int] | None:
        """Block for the next batch: ``(entries, joined payload, spans)`` from the head of the queue, at most the
        current batch limit (bigger entries are cut first); None when closing and empty. Entries stay queued until
        :meth:`_done` takes them off."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            limit = self._batch_limit
            if len(self._queue[0].payload) > limit and self._queue[0].spans > 1:
                # One request (or the rest of a timed-out batch) over the limit: a next hop with the usual 4 MiB
                # limit would refuse it for good, a slow one would time out again. It goes out in pieces.
                self._split_head(1, limit)
            parts: list[bytes] = []
            size = spans = 0
            for entry in self._queue:
                if parts and size + len(entry.payload) > limit:
                    break
                parts.append(entry.payload)
                size += len(entry.payload)
                spans += entry.spans
            return len(parts), b"".join(parts), spans

    def _split_head(self, entries: int, limit: int) -> None:
        """Replace the first ``entries`` entries by pieces of at most ``limit`` bytes (caller holds the lock)."""
        taken = [self._queue.popleft() for _ in range(entries)]
        seqs = [entry.seq for entry in taken if entry.seq is not None]
        pieces = split_request(b"".join(entry.payload for entry in taken), limit)
        replacement = [_Entry(payload, count, None) for payload, count in pieces]
        replacement[-1] = replacement[-1]._replace(seq=max(seqs) if seqs else None)
        self._queue.extendleft(reversed(replacement))
        self._queued_bytes += sum(len(entry.payload) for entry in replacement) - sum(len(e.payload) for e in taken)

    def _deliver(self, entries: int, payload: bytes, spans: int) -> bool:
        """Send one batch until it is accepted or refused for good (True), or the shutdown deadline passed (False)."""
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                rejected = self.send(payload, self.config.export_timeout_seconds)
            except ExportTimeout as error:
                self.telemetry.add(EXPORT_FAILURES, exporter=self.url)
                if spans > 1:
                    self._batch_limit = max(1, min(self._batch_limit, len(payload) // 2))
                    logger.warning(
                        "export of %d spans (%d bytes) to %s timed out (%s); sending it in batches of %d bytes",
                        spans, len(payload), self.url, error, self._batch_limit,
                    )  # fmt: skip
                    with self._cond:
                        self._split_head(entries, self._batch_limit)
                    # The next hop is likely still busy with the batch it did not answer: give it room first.
                    return not self._pause(self._backoff(0), error)
                if self._pause(self._backoff(attempt), error):
                    return False
                attempt += 1
                continue
            except RetryableExportError as error:
                self.telemetry.add(EXPORT_FAILURES, exporter=self.url)
                delay = clamp_retry_delay(error.delay, self._backoff(attempt), self.config)
                logger.warning("export to %s failed (%s); retrying %d spans in %.2fs", self.url, error, spans, delay)
                if self._pause(delay, error):
                    return False
                attempt += 1
                continue
            except PermanentExportError as error:
                self.telemetry.add(EXPORT_FAILURES, exporter=self.url)
                self._drop(spans, f"the next hop refused it permanently: {error}")
                self._done(entries)
                return True
            if rejected:
                logger.warning("%s rejected %d of %d spans (partial success)", self.url, rejected, spans)
                self.telemetry.add(SPANS_EXPORT_DROPPED, rejected, exporter=self.url)
            self.telemetry.add(SPANS_EXPORTED, spans - rejected, exporter=self.url)
            fast = time.monotonic() - started < self.config.export_timeout_seconds / 2
            if fast and len(payload) >= self._batch_limit // 2:
                grown = self._batch_limit + self._batch_limit // 4 + 1
                self._batch_limit = min(self.config.export_batch_max_bytes, grown)
            self._done(entries)
            return True

    def _done(self, entries: int) -> None:
        """The first ``entries`` entries are delivered (or given up): off the queue, and committed on disk."""
        with self._cond:
            taken = [self._queue.popleft() for _ in range(entries)]
            self._queued_spans -= sum(entry.spans for entry in taken)
            self._queued_bytes -= sum(len(entry.payload) for entry in taken)
            self._busy_since = time.monotonic()
        seqs = [entry.seq for entry in taken if entry.seq is not None]
        if seqs and self.disk is not None:
            self.disk.commit(max(seqs))

    def _pause(self, delay: float, error: RetryableExportError) -> bool:
        """Wait ``delay`` seconds before a retry, less when an unreachable next hop is back; True on abort."""
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            if self._abort.wait(min(remaining, RECONNECT_PROBE_SECONDS) if error.unreachable else remaining):
                self._give_up()
                return True
            if error.unreachable and self.reachable():
                logger.info("%s answers again; retrying now", self.url)
                return False
        return False

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with +-20% jitter, capped."""
        base = self.config.retry_initial_backoff_seconds * (2 ** min(attempt, 32))
        return min(base, self.config.retry_max_backoff_seconds) * random.uniform(0.8, 1.2)

    def _drop(self, spans: int, why: str) -> None:
        logger.error("dropping %d spans for %s: %s", spans, self.url, why)
        self.telemetry.add(SPANS_EXPORT_DROPPED, spans, exporter=self.url)

    def _give_up(self) -> None:
        """The shutdown deadline passed: count what is queued as dropped (with a disk queue it stays on disk)."""
        with self._cond:
            left = self._queued_spans
            if self.disk is None:
                self._queue.clear()
                self._queued_spans = self._queued_bytes = 0
        if not left:
            return
        if self.disk is None:
            self._drop(left, "shutdown deadline passed before they could be sent")
        else:
            logger.warning("%d spans for %s stay in %s for the next start", left, self.url, self.disk.directory)


def clamp_retry_delay(requested: float | None, backoff: float, config: ProcessorConfig) -> float:
    """The server's delay (Retry-After / RetryInfo) within [initial backoff, max backoff]; our backoff without one.

    ``0`` or a date in the past must not mean a hot loop, ``99999999999`` must not mean a stalled (or crashed)
    exporter: the next hop gets its breathing room, and we still try again within ``retry_max_backoff_seconds``.
    """
    if requested is None or not math.isfinite(requested):
        return backoff
    return min(max(requested, config.retry_initial_backoff_seconds), config.retry_max_backoff_seconds)


def queue_directory(queue_dir: str, url: str) -> str:
    """One subdirectory of ``queue_dir`` per exporter URL: readable, and unique by a short hash."""
    readable = re.sub(r"[^A-Za-z0-9.]+", "_", url).strip("_")[:60]
    return os.path.join(queue_dir, f"{readable}-{hashlib.sha256(url.encode()).hexdigest()[:8]}")


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

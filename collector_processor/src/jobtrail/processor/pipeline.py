"""Wires receivers -> stitcher (span store + decision cache) -> exporters; owns what needs a clock: the ticker, stop.

Backpressure instead of loss: a request is admitted only when every exporter's queue has room for its spans;
otherwise the receiver refuses it as retryable (HTTP 503 + Retry-After, gRPC UNAVAILABLE + RetryInfo) before
anything was kept, and the sender retries. Everything admitted is forwarded: stitched, or unchanged and counted.

Usage::

    pipeline = Pipeline(ProcessorConfig(grpc_listen="127.0.0.1:0", export_to=["grpc://127.0.0.1:4317"]))
    pipeline.start()
    ...  # pipeline.grpc_port, pipeline.http_port
    pipeline.stop()  # flushes everything held, then drains the exporters
"""

from __future__ import annotations

import logging
import os
import threading
import time

from jobtrail.processor.backpressure import Overloaded
from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.decision_cache import DecisionCache
from jobtrail.processor.exporters import exporter_for
from jobtrail.processor.hold_journal import HELD_JOURNAL_DIR, HoldJournal
from jobtrail.processor.receivers.grpc import GrpcReceiver
from jobtrail.processor.receivers.http import HttpReceiver
from jobtrail.processor.span_store import SpanStore
from jobtrail.processor.stitch import UNCHANGED_REASONS, Stitcher, StitchResult
from jobtrail.processor.telemetry import (
    HELD_BYTES,
    HELD_TRACES,
    REFUSED_OVERLOADED,
    REFUSED_REASONS,
    REQUESTS_REFUSED,
    SPANS_FORWARDED_UNCHANGED,
    SPANS_HELD,
    SPANS_RECEIVED,
    SPANS_REJECTED,
    SPANS_STITCHED,
    TRACE_MAPPINGS,
    TRACE_MAPPINGS_EVICTED,
    Telemetry,
)
from jobtrail.processor.view import TraceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

logger = logging.getLogger("jobtrail.processor")


class Pipeline:
    """One processor instance: receivers, the stitcher with its span store and decision cache, and one queued
    exporter per next hop."""

    def __init__(self, config: ProcessorConfig, telemetry: Telemetry | None = None) -> None:
        self.config = config.validate()
        self.telemetry = telemetry or Telemetry()
        self.spans = SpanStore(config.hold_seconds, config.max_held_spans, config.max_held_bytes)
        self.decisions = DecisionCache(config.mapping_ttl_seconds, config.max_mappings)
        self.stitcher = Stitcher(self.spans, self.decisions, config.stitch_rule, results=TraceRequest)
        self.exporters = [exporter_for(url, config, self.telemetry) for url in config.export_to]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="hold-window", daemon=True)
        self._declare_series()
        self._journal = HoldJournal(os.path.join(config.queue_dir, HELD_JOURNAL_DIR)) if config.queue_dir else None
        self._grpc = GrpcReceiver(config, self.consume, self.telemetry) if config.grpc_listen else None
        self._http = HttpReceiver(config, self.consume, self.telemetry, self.health) if config.http_listen else None
        self._started = False

    @property
    def grpc_port(self) -> int | None:
        return self._grpc.port if self._grpc else None

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    def start(self) -> None:
        for exporter in self.exporters:
            exporter.start()
        if self._journal:
            self._replay_held()
        self._ticker.start()
        if self._grpc:
            self._grpc.start()
        if self._http:
            self._http.start()
        self._started = True
        logger.info(
            "jobtrail processor listening grpc=%s http=%s, exporting to %s, hold %.1fs, stitching %s",
            self.grpc_port,
            self.http_port,
            ", ".join(self.config.export_to),
            self.config.hold_seconds,
            "with the C scanner" if self.stitcher.uses_c_scanner else "in Python (jobtrail._otlp_wire not installed)",
        )

    def stop(self) -> None:
        """Stop receiving, forward everything held (unchanged, counted), drain the exporters, log the counters."""
        if self._stopping.is_set():
            return
        deadline = time.monotonic() + self.config.shutdown_timeout_seconds
        if self._grpc:
            self._grpc.stop(grace=min(2.0, self.config.shutdown_timeout_seconds))
        if self._http:
            self._http.stop()
        with self._lock:
            # Under the lock: a request still in flight is either fully queued already or refused as retryable.
            self._stopping.set()
            self._forward(self.stitcher.drain())
            if self._journal:
                self._journal.commit_all()
        if self._started:
            self._ticker.join()
        for exporter in self.exporters:
            exporter.stop(max(deadline - time.monotonic(), 0.0))
        if self._journal:
            self._journal.close()
        logger.info("jobtrail processor stopped: %s", self.telemetry.summary())

    def health(self) -> list[str]:
        """What ``/healthz`` reports: every exporter's problems (a dead or stalled export loop); empty when fine."""
        now = time.monotonic()
        problems = [problem for exporter in self.exporters for problem in exporter.problems(now)]
        return problems + [self._journal.error] if self._journal and self._journal.error else problems

    # --- the consume path (called by the receivers' threads) ---------------------------------------
    def consume(self, request: ExportTraceServiceRequest, original: bytes | None) -> tuple[int, str]:
        """Stitch and queue one request; ``(rejected_spans, message)`` for a partial-success answer."""
        spans = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        size = len(original) if original is not None else request.ByteSize()
        incoming = HoldJournal.incoming(request, original) if self._journal else None
        with self._lock:
            full = [exporter.url for exporter in self.exporters if not exporter.has_room(spans, size)]
            if full or self._stopping.is_set():
                self.telemetry.add(REQUESTS_REFUSED, reason=REFUSED_OVERLOADED)
                why = f"export queue full ({', '.join(full)})" if full else "processor is shutting down"
                raise Overloaded(f"{why}; retry later", self.config.retry_after_seconds)
            now = time.monotonic()
            result = self.stitcher.process(request, now, original)
            self.telemetry.add(SPANS_RECEIVED, spans)
            payload = self._forward(result, original)
            if self._journal and incoming:
                self._journal.record(incoming, payload, result.held, now)
        return result.rejected, result.rejected_reason

    def _forward(self, result: StitchResult, original: bytes | None = None) -> bytes:
        """Count what the stitcher decided and queue what goes out (the original bytes when nothing changed); the
        bytes queued (empty when no span goes out)."""
        self.telemetry.add(SPANS_REJECTED, result.rejected)
        self.telemetry.add(SPANS_STITCHED, result.stitched)
        for reason, count in result.unchanged.items():
            self.telemetry.add(SPANS_FORWARDED_UNCHANGED, count, reason=reason)
        if not result.spans_out:
            return b""
        payload = original if original is not None and not result.modified else result.serialized()
        for exporter in self.exporters:
            exporter.put(payload, result.spans_out)
        return payload

    def _replay_held(self) -> None:
        """After a crash with ``queue_dir``: the spans that were held go through the stitcher again."""
        assert self._journal is not None
        now = time.monotonic()
        replayed = 0
        with self._lock:
            for request in self._journal.replay(now):
                replayed += sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
                result = self.stitcher.process(request, now)
                self._forward(result)
            self.telemetry.add(SPANS_RECEIVED, replayed)
        if replayed:
            logger.info("%d held spans from before a crash are back (%s)", replayed, self.config.queue_dir)

    # --- housekeeping -------------------------------------------------------------------------------
    def _tick(self) -> None:
        """Forward traces whose hold window ended; log the counters now and then."""
        interval = min(max(self.config.hold_seconds / 4, 0.01), 0.25)
        next_log = time.monotonic() + self.config.log_interval_seconds
        while not self._stopping.wait(interval):
            now = time.monotonic()
            with self._lock:
                self._forward(self.stitcher.expire(now))
                if self._journal:  # what was held before now - hold_seconds is in the export queues now
                    self._journal.commit_before(now - self.config.hold_seconds)
            if now >= next_log:
                logger.info("jobtrail processor counters: %s", self.telemetry.summary())
                next_log = now + self.config.log_interval_seconds

    def _declare_series(self) -> None:
        telemetry = self.telemetry
        for name in (SPANS_RECEIVED, SPANS_REJECTED, SPANS_STITCHED):
            telemetry.declare(name)
        for reason in UNCHANGED_REASONS:
            telemetry.declare(SPANS_FORWARDED_UNCHANGED, reason=reason)
        for reason in REFUSED_REASONS:
            telemetry.declare(REQUESTS_REFUSED, reason=reason)
        telemetry.gauge(SPANS_HELD, lambda: self.spans.held_spans)
        telemetry.gauge(HELD_TRACES, lambda: self.spans.held_traces)
        telemetry.gauge(HELD_BYTES, lambda: self.spans.held_bytes)
        telemetry.gauge(TRACE_MAPPINGS, lambda: len(self.decisions))
        telemetry.gauge(TRACE_MAPPINGS_EVICTED, lambda: self.decisions.evicted)

"""A forking worker's horse exports its spans before ``os._exit``, but never waits on a dead collector.

The SDK's ``BatchSpanProcessor.force_flush`` blocks until its exporter gives up: it ignores its
``timeout_millis`` (SDK 1.45), and the OTLP exporters retry for up to 10 s. So the horse runs the flush in
a thread and waits at most ``flush_timeout_ms``. A flush that does not finish in time opens a breaker kept
in memory shared with every process forked after instrumenting (the parent worker and all its later
horses): while it is open, horses do not wait at all, and one horse per ``probe_interval_s`` tries again
with the full bound; the first flush that finishes closes it. The spans a horse leaves behind are counted
in that shared memory, logged, and reported by the parent worker as the counter
``jobtrail.rq.horse.spans.unsent`` (a horse's own metrics would die with it).
"""

from __future__ import annotations

import enum
import logging
import mmap
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from jobtrail.conventions import METRIC_HORSE_SPANS_UNSENT
from jobtrail.version import __version__
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

_log = logging.getLogger("jobtrail.rq")

_LAYOUT = struct.Struct("<ddqq")
"""opened_at (monotonic s, 0 = closed), probe_at (monotonic s), unsent spans in total, unsent since opened."""


class FlushOutcome(enum.Enum):
    FLUSHED = "flushed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"


class ExportBreaker:
    """Breaker state in an anonymous shared mapping: forked processes see each other's writes.

    Horses of one worker run one after another, so plain reads and writes are enough; with several
    workers forked from one process, a lost update only miscounts a few spans.
    """

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, _LAYOUT.size)  # MAP_SHARED: survives fork as one page for all

    def _read(self) -> tuple[float, float, int, int]:
        return _LAYOUT.unpack_from(self._memory, 0)

    def _write(self, opened_at: float, probe_at: float, unsent: int, unsent_in_outage: int) -> None:
        _LAYOUT.pack_into(self._memory, 0, opened_at, probe_at, unsent, unsent_in_outage)

    @property
    def is_open(self) -> bool:
        return self._read()[0] > 0

    @property
    def unsent(self) -> int:
        """Spans horses could not send, since this process started (the counter's value)."""
        return self._read()[2]

    def probe_due(self, now: float, interval_s: float) -> bool:
        """Open and no horse tried for ``interval_s``: this caller becomes the probe."""
        opened_at, probe_at, unsent, in_outage = self._read()
        if now - probe_at < interval_s:
            return False
        self._write(opened_at, now, unsent, in_outage)
        return True

    def open(self, now: float, unsent: int) -> None:
        opened_at, _probe_at, total, in_outage = self._read()
        self._write(opened_at or now, now, total + unsent, in_outage + unsent)

    def count(self, unsent: int) -> None:
        opened_at, probe_at, total, in_outage = self._read()
        self._write(opened_at, probe_at, total + unsent, in_outage + unsent)

    def close(self) -> int:
        """Close; how many spans were left unsent while it was open."""
        _opened_at, _probe_at, total, in_outage = self._read()
        self._write(0.0, 0.0, total, 0)
        return in_outage


BREAKER = ExportBreaker()
"""One per process tree: created when ``jobtrail.rq`` is imported, before any worker forks."""

_metric_registered = False


def register_unsent_counter(meter_provider: metrics.MeterProvider | None) -> None:
    """The observable counter of unsent horse spans, read from shared memory by whoever collects metrics."""
    global _metric_registered
    if _metric_registered:
        return
    _metric_registered = True

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(BREAKER.unsent)

    meter = metrics.get_meter(__name__, __version__, meter_provider)
    meter.create_observable_counter(
        METRIC_HORSE_SPANS_UNSENT,
        callbacks=[observe],
        unit="{span}",
        description="Spans a forking worker's job horse could not export before it exited",
    )


class HorseFlush:
    """Flush the tracer provider from a horse, bounded, through the shared breaker."""

    def __init__(
        self,
        provider: Callable[[], Any],
        timeout_ms: int,
        probe_interval_s: float,
        breaker: ExportBreaker = BREAKER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._timeout_ms = timeout_ms
        self._probe_interval_s = probe_interval_s
        self._breaker = breaker
        self._clock = clock

    def __call__(self, job_id: str) -> FlushOutcome:
        provider = self._provider()
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is None:
            return FlushOutcome.FLUSHED
        now = self._clock()
        was_open = self._breaker.is_open
        if was_open and not self._breaker.probe_due(now, self._probe_interval_s):
            unsent = queued_spans(provider)
            self._breaker.count(unsent)
            _log.debug("job %s: exports are failing: %s spans of this work horse not sent", job_id, unsent)
            return FlushOutcome.SKIPPED
        queued = queued_spans(provider)
        if _finishes_within(force_flush, self._timeout_ms):
            if was_open:
                lost = self._breaker.close()
                _log.warning("span exports succeed again; %s spans of job horses could not be sent meanwhile", lost)
            return FlushOutcome.FLUSHED
        self._breaker.open(now, queued)
        if not was_open:
            _log.warning(
                "job %s: span export did not finish within %s ms, %s spans of this work horse not sent; "
                "the next job horses will not wait for exports until one succeeds (probing every %s s)",
                job_id,
                self._timeout_ms,
                queued,
                self._probe_interval_s,
            )
        return FlushOutcome.TIMED_OUT


def _finishes_within(force_flush: Callable[[int], Any], timeout_ms: int) -> bool:
    """Run the flush in a daemon thread (the horse's ``os._exit`` ends it) and wait at most the bound."""
    result: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(force_flush(timeout_ms))
        except Exception:
            _log.warning("flushing spans failed", exc_info=True)
            result.append(False)
        finally:
            done.set()

    threading.Thread(target=run, name="jobtrail-horse-flush", daemon=True).start()
    return done.wait(timeout_ms / 1000.0) and result[0] is not False


def queued_spans(provider: Any) -> int:
    """Spans waiting in the provider's batch processors.

    The SDK offers no public count, so this reads its processors' queues and answers 0 for a layout it
    does not know (tested against the SDK versions the package admits).
    """
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    total = 0
    for processor in processors:
        queue = getattr(getattr(processor, "_batch_processor", None), "_queue", None)
        if queue is not None:
            total += len(queue)
    return total

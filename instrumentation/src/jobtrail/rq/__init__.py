"""OpenTelemetry instrumentation for RQ: trace context in job payloads, one linked span per attempt.

Usage::

    from jobtrail.rq import RQInstrumentor

    RQInstrumentor().instrument()                         # the global tracer provider, propagation="link"
    RQInstrumentor().instrument(tracer_provider=provider, propagation="child")

or with no code change: ``opentelemetry-instrument rq worker high default`` and
``opentelemetry-instrument python app.py`` (entry point ``opentelemetry_instrumentor: rq``; set
``JOBTRAIL_RQ_PROPAGATION`` to choose the mode there).

What it does (names in shared/CONVENTIONS.md):

* Every public way a job reaches a queue (``enqueue``, ``enqueue_call``, ``enqueue_many``,
  ``enqueue_at``, ``enqueue_in``, ``enqueue_job``; jobs with ``depends_on`` carry theirs until
  released) is covered by one ``send {queue}`` span around the outermost call. Its context
  (traceparent, tracestate, baggage, through the global propagator) goes into ``job.meta`` when the
  job is created. ``enqueue_many`` follows the messaging conventions for batch sends: a ``create
  {queue}`` span per job (its own creation context, with ``messaging.message.id``) linked from the
  batch's CLIENT ``send`` span. Retries, scheduler promotion, dependency release and requeues never
  overwrite a creation context.
* Every execution attempt is a CONSUMER ``process {queue}`` span: a new trace root linked to the
  creation context (``link``, the default: one trace per attempt, the collector processor stitches
  them back), its child (``child``), or neither (``none``). Attempt N > 1 also links to attempt N-1.
  It starts with a zero-duration ``pickup {queue}`` marker (exported while the job runs). It carries
  the attempt number (counting on across operator requeues, flagged ``rq.job.requeued``), retries
  left, queue wait, worker name, outcome and request id; failed attempts get the exception and
  ``error.type``, a scheduled retry a ``rq.retry.scheduled`` event, the final failure a
  ``rq.job.failed`` event with the first error kept across retries. A work horse that dies mid-job
  is recorded by its parent as ``abandoned`` (``stopped`` when a stop command killed it).
* Inside the job, the attempt span is current and the request's baggage is set, so the job's own
  spans and log records (see ``jobtrail.logs``) join the trail.
* A forking worker's horse flushes the tracer provider before it exits, waiting at most
  ``flush_timeout_ms`` (default 2000) whatever the SDK does; after a flush that did not finish, the
  next horses do not wait at all until a probe (one horse per ``flush_probe_interval_s``, default 30)
  gets through again. Spans left unsent are logged and counted (``jobtrail.rq.horse.spans.unsent``,
  an observable counter on ``meter_provider`` or the global one, reported by the parent worker).

Options of ``instrument()``: ``tracer_provider``, ``meter_provider``, ``propagation``,
``flush_timeout_ms``, ``flush_probe_interval_s``, ``produce_hook(span, queue, args, kwargs)`` (send
span start) and ``consume_hook(span, job)`` (attempt span start), named after contrib's kafka hooks.
``suppress_instrumentation()`` silences it (no spans, nothing injected). With no SDK tracer provider
it logs one warning.

Tracing never changes the outcome of an enqueue or a job: unusable values in ``job.meta`` are dropped
with one warning naming the job, a dead collector costs one horse the flush bound, hooks that raise
are logged, and RQ's own exceptions reach the caller unchanged (the send span records them). Job
arguments are never recorded. ``SpawnWorker`` horses are new interpreters: instrument them there with
``opentelemetry-instrument``.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from jobtrail.conventions import PROPAGATION_LINK, PROPAGATION_MODES
from jobtrail.provider import warn_if_no_sdk_provider
from jobtrail.rq.attempt import WorkerHooks
from jobtrail.rq.flush import HorseFlush, register_unsent_counter
from jobtrail.rq.package import _instruments
from jobtrail.rq.producer import ProducerHooks
from jobtrail.version import __version__
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.semconv.schemas import Schemas
from wrapt import wrap_function_wrapper

from rq.queue import Queue
from rq.worker.base import BaseWorker

__all__ = ["RQInstrumentor"]

PROPAGATION_ENV = "JOBTRAIL_RQ_PROPAGATION"
DEFAULT_FLUSH_TIMEOUT_MS = 2000
DEFAULT_FLUSH_PROBE_INTERVAL_S = 30.0
SCHEMA_URL = Schemas.V1_27_0.value
"""The semantic conventions version whose messaging names (``messaging.operation.type``/``.name``) we emit."""

_QUEUE_METHODS = ("enqueue_job", "enqueue_many", "enqueue_at", "create_job")
"""The send paths: ``enqueue`` -> ``enqueue_call`` -> ``enqueue_job``; ``enqueue_in`` -> ``enqueue_at``."""
_WORKER_METHODS = ("perform_job", "handle_job_failure", "handle_job_retry")


class RQInstrumentor(BaseInstrumentor):
    """Instruments RQ's queues and workers (see the module docstring)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        propagation = kwargs.get("propagation") or os.environ.get(PROPAGATION_ENV) or PROPAGATION_LINK
        if propagation not in PROPAGATION_MODES:
            raise ValueError(f"propagation must be one of {', '.join(PROPAGATION_MODES)}, not {propagation!r}")
        provider = kwargs.get("tracer_provider")
        if provider is None:
            warn_if_no_sdk_provider("jobtrail.rq")
        tracer = trace.get_tracer(__name__, __version__, provider, schema_url=SCHEMA_URL)
        register_unsent_counter(kwargs.get("meter_provider"))
        flush = HorseFlush(
            lambda: provider or trace.get_tracer_provider(),
            int(kwargs.get("flush_timeout_ms", DEFAULT_FLUSH_TIMEOUT_MS)),
            float(kwargs.get("flush_probe_interval_s", DEFAULT_FLUSH_PROBE_INTERVAL_S)),
        )

        producer = ProducerHooks(tracer, kwargs.get("produce_hook"))
        for method in _QUEUE_METHODS:
            wrap_function_wrapper(Queue, method, getattr(producer, method))
        worker = WorkerHooks(tracer, propagation, flush, kwargs.get("consume_hook"))
        for method in _WORKER_METHODS:
            wrap_function_wrapper(BaseWorker, method, getattr(worker, method))

    def _uninstrument(self, **kwargs: Any) -> None:
        for method in _QUEUE_METHODS:
            unwrap(Queue, method)
        for method in _WORKER_METHODS:
            unwrap(BaseWorker, method)

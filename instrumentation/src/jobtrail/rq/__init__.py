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
  released) is covered by a PRODUCER ``send {queue}`` span, whose context (traceparent, tracestate,
  baggage, through the global propagator) goes into ``job.meta`` when the job is created. Retries,
  scheduler promotion and dependency release never overwrite it.
* Every execution attempt is a CONSUMER ``process {queue}`` span: a new trace root linked to the
  creation context (``link``, the default: one trace per attempt, the collector processor stitches
  them back), its child (``child``), or neither (``none``). Attempt N > 1 also links to attempt N-1.
  It carries the attempt number, retries left, queue wait, worker name, outcome and request id;
  failed attempts get the exception and ``error.type``, a scheduled retry a ``rq.retry.scheduled``
  event, the final failure a ``rq.job.failed`` event with the first error kept across retries.
  A work horse that dies mid-job is recorded by its parent as ``abandoned`` (``stopped`` when a stop
  command killed it).
* Inside the job, the attempt span is current and the request's baggage is set, so the job's own
  spans and log records (see ``jobtrail.logs``) join the trail.
* A forking worker's horse flushes the tracer provider (bounded by ``flush_timeout_ms``, default
  2000) before it exits, so its spans are not lost with it.

Tracing never changes the outcome of an enqueue or a job: malformed meta is ignored with a warning,
a dead exporter only delays the horse's exit by at most the flush timeout, and RQ's own exceptions
reach the caller unchanged (the send span records them). Job arguments are never recorded.
``SpawnWorker`` horses are new interpreters: instrument them there with ``opentelemetry-instrument``.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from jobtrail.conventions import PROPAGATION_LINK, PROPAGATION_MODES
from jobtrail.rq.attempt import WorkerHooks
from jobtrail.rq.package import _instruments
from jobtrail.rq.producer import ProducerHooks, enqueue_at_due_time, enqueue_in_due_time
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from rq.queue import Queue
from rq.worker.base import BaseWorker

__all__ = ["RQInstrumentor"]

PROPAGATION_ENV = "JOBTRAIL_RQ_PROPAGATION"
DEFAULT_FLUSH_TIMEOUT_MS = 2000

_QUEUE_SEND_METHODS = ("enqueue", "enqueue_call", "enqueue_many")
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
        flush_timeout_ms = int(kwargs.get("flush_timeout_ms", DEFAULT_FLUSH_TIMEOUT_MS))
        tracer = trace.get_tracer(__name__, tracer_provider=provider)

        def flush() -> None:
            force_flush = getattr(provider or trace.get_tracer_provider(), "force_flush", None)
            if force_flush is not None:
                force_flush(flush_timeout_ms)

        producer = ProducerHooks(tracer)
        for method in _QUEUE_SEND_METHODS:
            wrap_function_wrapper(Queue, method, producer.send())
        wrap_function_wrapper(Queue, "enqueue_at", producer.send_at(enqueue_at_due_time))
        wrap_function_wrapper(Queue, "enqueue_in", producer.send_at(enqueue_in_due_time))
        wrap_function_wrapper(Queue, "enqueue_job", producer.enqueue_job)
        wrap_function_wrapper(Queue, "create_job", producer.create_job)

        worker = WorkerHooks(tracer, propagation, flush)
        for method in _WORKER_METHODS:
            wrap_function_wrapper(BaseWorker, method, getattr(worker, method))

    def _uninstrument(self, **kwargs: Any) -> None:
        for method in (*_QUEUE_SEND_METHODS, "enqueue_at", "enqueue_in", "enqueue_job", "create_job"):
            unwrap(Queue, method)
        for method in _WORKER_METHODS:
            unwrap(BaseWorker, method)

"""Worker classes for the plain ``rq worker`` command that log correlated JSON lines and no job arguments.

``rq worker`` configures its own plain-text handlers on the ``rq.worker`` and ``rq.job`` loggers, and by
default logs each job's description: its function *and its arguments*. Pick one of these classes on the
command line instead, and run it under ``opentelemetry-instrument`` so the RQ instrumentation is on::

    OTEL_SERVICE_NAME=billing-worker \\
        opentelemetry-instrument rq worker -w jobtrail.rq.workers.JsonLogWorker --with-scheduler mail

Every record (rq's, your job's, any library's) then goes to stderr as one JSON object with ``request_id``,
``trace_id``, ``span_id``, ``job_id``, ``attempt`` and ``service`` (see :mod:`jobtrail.logs`). The service
is the tracer provider's ``service.name`` (``OTEL_SERVICE_NAME`` under ``opentelemetry-instrument``; ``rq-worker``
without an SDK provider). Job descriptions are not logged whatever
``--disable-job-desc-logging`` says; subclass and set ``log_job_description = True`` to have them back.
"""

from __future__ import annotations

import logging
from typing import Any

from jobtrail.logs import configure_logging
from opentelemetry import trace
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

from rq.logutils import ColorizingStreamHandler
from rq.worker import SimpleWorker, Worker

DEFAULT_SERVICE = "rq-worker"
_RQ_LOGGERS = ("rq.worker", "rq.job", "rq.scheduler")


class JsonLogsMixin:
    """Takes over logging when the worker starts (``bootstrap``), so ``rq info`` and friends change nothing."""

    log_job_description = False
    """RQ's default logs every job's arguments (``log_job_description``); jobtrail never records them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["log_job_description"] = type(self).log_job_description
        super().__init__(*args, **kwargs)

    def bootstrap(self, logging_level: str | None = "INFO", *args: Any, **kwargs: Any) -> None:
        level = logging.getLevelName(logging_level.upper()) if isinstance(logging_level, str) else logging.INFO
        configure_logging(service_name(), level=level)
        for name in _RQ_LOGGERS:
            # rq's own plain-text handlers (installed by the CLI before the worker exists) would print each
            # record a second time, unstructured; without them the records reach the JSON handler on the root.
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if isinstance(h, ColorizingStreamHandler)]:
                logger.removeHandler(handler)
            logger.propagate = True
        super().bootstrap(logging_level, *args, **kwargs)  # type: ignore[misc]  # a mixin for rq workers


def service_name() -> str:
    """The SDK provider's ``service.name`` (what the worker's spans say), else :data:`DEFAULT_SERVICE`."""
    resource = getattr(trace.get_tracer_provider(), "resource", None)
    name = getattr(resource, "attributes", {}).get(SERVICE_NAME)
    return str(name) if name and not str(name).startswith("unknown_service") else DEFAULT_SERVICE


class JsonLogWorker(JsonLogsMixin, Worker):
    """rq's forking ``Worker`` with correlated JSON logs: ``rq worker -w jobtrail.rq.workers.JsonLogWorker``."""


class JsonLogSimpleWorker(JsonLogsMixin, SimpleWorker):
    """rq's ``SimpleWorker`` (no fork) with correlated JSON logs: ``-w jobtrail.rq.workers.JsonLogSimpleWorker``."""


__all__ = ["DEFAULT_SERVICE", "JsonLogSimpleWorker", "JsonLogWorker", "JsonLogsMixin", "service_name"]

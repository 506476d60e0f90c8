"""Job functions the tests enqueue: importable by workers in this process and in subprocesses."""

from __future__ import annotations

import logging
import os
import signal
import smtplib
import time

from jobtrail.conventions import REQUEST_ID_BAGGAGE_KEY
from opentelemetry import baggage, trace
from rq import Retry, get_current_job

STEP_SPAN = "render receipt"
_tracer = trace.get_tracer(__name__)
_log = logging.getLogger("tests.rq.jobs")


def _attempts_so_far(key: str) -> int:
    """Counts calls across attempts and processes, in the job's own Redis."""
    return int(get_current_job().connection.incr(key))


def add(a: int, b: int) -> int:
    """Succeeds, with one span of its own."""
    with _tracer.start_as_current_span(STEP_SPAN):
        _log.info("adding")
        return a + b


def fail_first(counter_key: str, failures: int) -> str:
    """Fails with an SMTP login error on the first ``failures`` calls, then succeeds."""
    with _tracer.start_as_current_span(STEP_SPAN):
        call = _attempts_so_far(counter_key)
        if call <= failures:
            raise smtplib.SMTPAuthenticationError(535, f"login refused on call {call}".encode())
        return f"sent on call {call}"


def always_fail(message: str) -> None:
    """Fails every time with a different message, so first and last errors can be told apart."""
    raise ValueError(f"{message} #{os.getpid()}-{time.monotonic_ns()}")


def ask_for_retry(counter_key: str, times: int, max_retries: int) -> object:
    """Returns ``Retry`` on the first ``times`` calls (rq's returned-Retry path), then a value."""
    if _attempts_so_far(counter_key) <= times:
        return Retry(max=max_retries)
    return "done"


def observe_context() -> dict[str, object]:
    """What the job sees: the current span and the request id in baggage."""
    span_context = trace.get_current_span().get_span_context()
    return {
        "trace_id": trace.format_trace_id(span_context.trace_id),
        "span_id": trace.format_span_id(span_context.span_id),
        "request_id": baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY),
    }


def die_abruptly() -> None:
    """The work horse is killed mid-job (as by the OOM killer)."""
    with _tracer.start_as_current_span(STEP_SPAN):
        os.kill(os.getpid(), signal.SIGKILL)


def sleep_for(seconds: float) -> None:
    """Long enough to be stopped while running."""
    time.sleep(seconds)


def save_progress_then_fail(progress: str) -> None:
    """Saves its own meta through ``get_current_job`` (another Job object than the worker's), then fails."""
    job = get_current_job()
    job.meta["progress"] = progress
    job.save_meta()
    raise RuntimeError("failed after saving progress")

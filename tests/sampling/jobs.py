"""Jobs of the sampled-traffic test: each makes one span of its own, some fail once and are retried."""

from __future__ import annotations

from opentelemetry import trace
from rq import get_current_job

STEP_SPAN = "render receipt"
_tracer = trace.get_tracer(__name__)


def render() -> str:
    """Succeeds on its first attempt."""
    with _tracer.start_as_current_span(STEP_SPAN):
        return "rendered"


def render_after_a_failure(counter_key: str) -> str:
    """Fails on its first attempt (RQ retries it), succeeds on the second."""
    with _tracer.start_as_current_span(STEP_SPAN):
        if int(get_current_job().connection.incr(counter_key)) == 1:
            raise ConnectionError("mail server went away")
        return "rendered"

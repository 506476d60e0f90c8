"""The one shape every refusal takes: ``{"error": {"reason", "request_id"}}`` plus the reason on the span.

Reasons are short stable snake_case words (``job_not_queued``, ``idempotency_conflict``) that
clients may branch on; a human-readable ``detail`` is optional and never needed to decide.
"""

from __future__ import annotations

import re

from jobtrail.conventions import ATTR_ERROR_REASON
from jobtrail.flask.request_ids import current_request_id
from opentelemetry import trace

import flask

_REASON_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def refuse(reason: str, status: int, *, detail: str | None = None) -> flask.Response:
    """A JSON refusal with ``status``; ``reason`` also goes on the current server span."""
    if not _REASON_PATTERN.fullmatch(reason):
        raise ValueError(f"refusal reason must be a short snake_case word, got {reason!r}")
    if not 400 <= status <= 599:
        raise ValueError(f"a refusal needs a 4xx or 5xx status, got {status}")
    trace.get_current_span().set_attribute(ATTR_ERROR_REASON, reason)
    error: dict[str, str] = {"reason": reason, "request_id": current_request_id()}
    if detail is not None:
        error["detail"] = detail
    response = flask.jsonify({"error": error})
    response.status_code = status
    return response

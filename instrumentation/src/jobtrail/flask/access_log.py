"""One log line per request: method, route, status, refusal reason, request id and user id (the shared field names).

Polls are requests too: a job followed by 14 polls gives 15 lines, each findable by its request id. The
route is the URL rule (``/api/receipts/<job_id>``), never the raw path, so ids and query strings stay out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from jobtrail.conventions import (
    LOG_EVENT,
    LOG_EVENT_HTTP_REQUEST,
    LOG_HTTP_METHOD,
    LOG_HTTP_ROUTE,
    LOG_HTTP_STATUS,
    LOG_REASON,
    LOG_REQUEST_ID,
    LOG_USER_ID,
)
from jobtrail.flask.request_ids import current_request_id

import flask

_log = logging.getLogger("jobtrail.flask.access")
_UNMATCHED = "<unmatched>"


def log_requests(app: flask.Flask, user_id: Callable[[], str | None] | None = None) -> flask.Flask:
    """Log each request of ``app`` once, when its response is ready; ``user_id()`` gives the app's opaque user id."""

    def log_request(response: flask.Response) -> flask.Response:
        rule = flask.request.url_rule
        fields: dict[str, object] = {
            LOG_EVENT: LOG_EVENT_HTTP_REQUEST,
            LOG_HTTP_METHOD: flask.request.method,
            LOG_HTTP_ROUTE: rule.rule if rule is not None else _UNMATCHED,
            LOG_HTTP_STATUS: response.status_code,
            LOG_REQUEST_ID: current_request_id(),
        }
        reason = _refusal_reason(response)
        if reason is not None:
            fields[LOG_REASON] = reason
        user = user_id() if user_id is not None else None
        if user is not None:
            fields[LOG_USER_ID] = user
        _log.info("%s %s %s", fields[LOG_HTTP_METHOD], fields[LOG_HTTP_ROUTE], response.status_code, extra=fields)
        return response

    app.after_request(log_request)
    return app


def _refusal_reason(response: flask.Response) -> str | None:
    """The ``error.reason`` of a refusal (see :func:`jobtrail.flask.refuse`), else None."""
    if response.status_code < 400 or not response.is_json:
        return None
    body = response.get_json(silent=True)
    error = body.get("error") if isinstance(body, dict) else None
    reason = error.get("reason") if isinstance(error, dict) else None
    return reason if isinstance(reason, str) else None

"""Request ids: one per user action, carried from the browser through Flask into RQ and the logs.

A well-formed ``X-Request-ID`` from the client is kept (the browser kit makes one per action);
anything else is replaced by a fresh id, so a malformed header can never reach a log line or a span.
"""

from __future__ import annotations

import secrets

from jobtrail.conventions import REQUEST_ID_HEADER, REQUEST_ID_PATTERN, REQUEST_ID_PREFIX

import flask

_ENVIRON_KEY = "jobtrail.request_id"


def new_request_id() -> str:
    """``req_`` and 16 lowercase hex characters from the OS's CSPRNG."""
    return REQUEST_ID_PREFIX + secrets.token_hex(8)


def is_request_id(value: str | None) -> bool:
    """True for a well-formed request id (the exact format, nothing around it)."""
    return value is not None and REQUEST_ID_PATTERN.fullmatch(value) is not None


def current_request_id() -> str:
    """The request id of the current Flask request, settled on first use and kept for the request."""
    environ = flask.request.environ
    settled = environ.get(_ENVIRON_KEY)
    if isinstance(settled, str):
        return settled
    offered = flask.request.headers.get(REQUEST_ID_HEADER)
    request_id = offered if offered is not None and is_request_id(offered) else new_request_id()
    environ[_ENVIRON_KEY] = request_id
    return request_id

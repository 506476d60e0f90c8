"""The job contract for Flask: a thin adapter over :class:`jobtrail.jobs.Contract` (request in, response out).

It reads what only Flask knows (the request id, the ``Idempotency-Key`` header, the raw body, the actor
from ``actor()``) and turns the core's answers into responses: refusals through :func:`refuse`, the job's
state on the server span and in the ``X-Job-State`` header. It never runs a job and never starts a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jobtrail.conventions import ATTR_JOB_STATE, JOB_STATE_HEADER
from jobtrail.flask.refusals import refuse
from jobtrail.flask.request_ids import current_request_id
from jobtrail.jobs.contract import Answer, Caller, Contract, Refusal
from jobtrail.jobs.idempotency import IDEMPOTENCY_KEY_HEADER
from opentelemetry import trace
from redis.exceptions import RedisError
from rq import Queue

import flask

_RAW_BODY: Any = object()


class JobContract:
    """Enqueue on ``queue``; answer status, result and cancel for the jobs this contract accepted.

    ``status_endpoint`` is the Flask endpoint that calls :meth:`status_response` with the job id as ``job_id``;
    the cancel URL is the status URL + ``/cancel``. ``actor`` returns the app's opaque id of whoever makes the
    current request (or None): idempotency keys are scoped to it, and a job accepted for an actor answers
    only that actor (404 for anyone else). ``name`` tells contracts on one queue apart (default: the queue's name).
    """

    def __init__(
        self,
        queue: Queue,
        status_endpoint: str,
        *,
        actor: Callable[[], str | None] | None = None,
        name: str | None = None,
        idempotency_ttl_s: int = 24 * 3600,
        tombstone_grace_s: int = 7 * 24 * 3600,
    ) -> None:
        self.queue = queue
        self._status_endpoint = status_endpoint
        self._actor = actor
        self.core = Contract(
            queue,
            self._status_url,
            name=name,
            idempotency_ttl_s=idempotency_ttl_s,
            record_grace_s=tombstone_grace_s,
        )

    def _status_url(self, job_id: str) -> str:
        return flask.url_for(self._status_endpoint, job_id=job_id)

    def caller(self) -> Caller:
        return Caller(current_request_id(), self._actor() if self._actor else None)

    def accept(
        self,
        func: Callable[..., Any] | str,
        *args: Any,
        idempotency_payload: Any = _RAW_BODY,
        job_items: Sequence[str] = (),
        **job_kwargs: Any,
    ) -> flask.Response:
        """Enqueue ``func(*args)`` like ``Queue.enqueue`` and answer ``202`` with where to follow the job.

        With an ``Idempotency-Key`` header, the same key and payload (``idempotency_payload``, by default the
        raw request body) from the same actor answers with the job of the first request. ``job_items`` lists
        the job's items up front (``pending`` in the status until the job runs them).
        """
        key = flask.request.headers.get(IDEMPOTENCY_KEY_HEADER)
        payload = flask.request.get_data() if idempotency_payload is _RAW_BODY else idempotency_payload
        answer = self.core.accept(
            self.caller(), func, args, job_kwargs, idempotency_key=key, payload=payload, items=job_items
        )
        return _respond(answer)

    def status_response(self, job_id: str) -> flask.Response:
        """The status response (``Cache-Control: no-store``); 404 for a job of another contract or actor."""
        return _respond(self.core.status(job_id, self.caller()))

    def cancel_response(self, job_id: str) -> flask.Response:
        """``POST {status_url}/cancel``: 202 with the status, 409 ``already_terminal``, or 404."""
        return _respond(self.core.cancel(job_id, self.caller()))

    def result_response(self, job_id: str) -> flask.Response:
        """What the finished job returned: 200, 409 ``not_finished``, or 404."""
        return _respond(self.core.result(job_id, self.caller()))

    def owns(self, job_id: str) -> bool:
        """This contract accepted the job and the current actor may see it (False when Redis cannot say)."""
        try:
            return self.core.owned(job_id, self.caller()) is not None
        except RedisError:
            return False


def _respond(answer: Answer) -> flask.Response:
    if isinstance(answer, Refusal):
        response = refuse(answer.reason, answer.status, detail=answer.detail)
    else:
        response = flask.jsonify(answer.body)
        response.status_code = answer.status
        state = answer.body.get("state")
        if isinstance(state, str):
            trace.get_current_span().set_attribute(ATTR_JOB_STATE, state)
            response.headers[JOB_STATE_HEADER] = state
    response.headers.update(answer.headers)
    return response

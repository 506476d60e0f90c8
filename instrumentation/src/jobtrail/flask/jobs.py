"""The async job contract: ``202 Accepted`` + a status URL, Idempotency-Key, and an honest status endpoint."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timezone
from typing import Any

from jobtrail.conventions import ATTR_JOB_STATE, JOB_STATE_HEADER, STATE_EXPIRED, STATE_NOT_FOUND
from jobtrail.flask.refusals import refuse
from jobtrail.flask.request_ids import current_request_id
from jobtrail.jobs.callbacks import record_failure, record_success
from jobtrail.jobs.idempotency import (
    IDEMPOTENCY_KEY_HEADER,
    Claim,
    IdempotencyStore,
    fingerprint,
    is_idempotency_key,
)
from jobtrail.jobs.record import JobRecord, StateChange, Tombstone, iso
from jobtrail.jobs.status import changes_since, state_of, view_of
from opentelemetry import trace
from redis.exceptions import RedisError
from rq import Callback, Queue
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL
from rq.exceptions import NoSuchJobError
from rq.job import Job

import flask

_log = logging.getLogger(__name__)

REASON_JOB_NOT_QUEUED = "job_not_queued"
REASON_IDEMPOTENCY_CONFLICT = "idempotency_conflict"
REASON_IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
REASON_INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
REASON_STATUS_UNAVAILABLE = "status_unavailable"

_RAW_BODY: Any = object()
_JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_NO_STORE = "no-store"


class JobContract:
    """Enqueue on ``queue`` and answer for the job until well after RQ forgets it.

    ``status_endpoint`` is the Flask endpoint that calls :meth:`status_response`; it takes the
    job id as ``job_id``. The tombstone outlives RQ's result/failure TTL by ``tombstone_grace_s``
    so that a job RQ has dropped reads ``expired``, and a job id never accepted reads ``not_found``.
    """

    def __init__(
        self,
        queue: Queue,
        status_endpoint: str,
        *,
        idempotency_ttl_s: int = 24 * 3600,
        tombstone_grace_s: int = 7 * 24 * 3600,
    ) -> None:
        self.queue = queue
        self._status_endpoint = status_endpoint
        self._tombstone_grace_s = tombstone_grace_s
        self._idempotency = IdempotencyStore(queue.connection, queue.name, idempotency_ttl_s)

    def accept(
        self, func: Callable[..., Any] | str, *args: Any, idempotency_payload: Any = _RAW_BODY, **job_kwargs: Any
    ) -> flask.Response:
        """Enqueue ``func(*args)`` like ``Queue.enqueue`` and answer ``202`` with where to follow the job.

        With an ``Idempotency-Key`` header, the same key and payload (``idempotency_payload``, by
        default the raw request body) answers with the job of the first request; the same key with
        another payload is ``409 idempotency_conflict``. Redis down: ``503 job_not_queued``, nothing enqueued.
        """
        request_id = current_request_id()
        idempotency_key = flask.request.headers.get(IDEMPOTENCY_KEY_HEADER)
        if idempotency_key is not None and not is_idempotency_key(idempotency_key):
            return refuse(
                REASON_INVALID_IDEMPOTENCY_KEY, 422, detail="Idempotency-Key must be 1 to 255 visible ASCII characters"
            )
        try:
            if idempotency_key is None:
                job = self._enqueue(func, args, job_kwargs, request_id)
                return self._accepted(job.id, request_id, state_of(job))
            payload = flask.request.get_data() if idempotency_payload is _RAW_BODY else idempotency_payload
            ours = Claim(fingerprint(payload), str(job_kwargs.pop("job_id", None) or uuid.uuid4().hex), request_id)
            holder = self._idempotency.claim(idempotency_key, ours)
            if holder.job_id != ours.job_id:
                return self._replay(holder, ours)
            try:
                job = self._enqueue(func, args, {**job_kwargs, "job_id": ours.job_id}, request_id)
            except RedisError:
                with suppress(RedisError):
                    self._idempotency.release(idempotency_key)
                raise
            try:
                self._idempotency.confirm(idempotency_key)
            except RedisError:
                _log.warning("job %s enqueued, but its Idempotency-Key claim could not be extended", job.id)
            return self._accepted(job.id, request_id, state_of(job))
        except RedisError as error:
            _log.warning("job not queued: Redis refused (%s)", type(error).__name__)
            return refuse(REASON_JOB_NOT_QUEUED, 503)

    def status_response(self, job_id: str) -> flask.Response:
        """The job's state, attempt, retries left, next run time, error reason and state history (no-store)."""
        try:
            body, status = self._status(job_id)
        except RedisError as error:
            _log.warning("job status unavailable: Redis refused (%s)", type(error).__name__)
            response = refuse(REASON_STATUS_UNAVAILABLE, 503)
        else:
            trace.get_current_span().set_attribute(ATTR_JOB_STATE, body["state"])
            response = flask.jsonify(body)
            response.status_code = status
            response.headers[JOB_STATE_HEADER] = body["state"]
        response.headers["Cache-Control"] = _NO_STORE
        return response

    def _enqueue(self, func: Callable[..., Any] | str, args: tuple, job_kwargs: dict[str, Any], request_id: str) -> Job:
        # The worker records each attempt through RQ's callbacks, unless the caller brings its own.
        job_kwargs = {"on_success": Callback(record_success), "on_failure": Callback(record_failure), **job_kwargs}
        job = self.queue.enqueue(func, *args, **job_kwargs)
        retry = job_kwargs.get("retry")
        tombstone = Tombstone(request_id=request_id, queue=self.queue.name, max_retries=retry.max if retry else 0)
        first = StateChange(state_of(job), job.enqueued_at or job.created_at)
        try:
            JobRecord(self.queue.connection, job.id).create(tombstone, [first], self._record_ttl(job))
        except RedisError:
            # The job is queued: say so. Its status will read not_found once RQ drops it.
            _log.warning("job %s enqueued, but its jobtrail record could not be written", job.id)
        return job

    def _record_ttl(self, job: Job) -> int | None:
        """Longer than RQ keeps the job: its TTL, then the longer of result and failure TTL, then the grace."""
        result_ttl = DEFAULT_RESULT_TTL if job.result_ttl is None else job.result_ttl
        failure_ttl = DEFAULT_FAILURE_TTL if job.failure_ttl is None else job.failure_ttl
        if result_ttl == -1 or failure_ttl == -1:
            return None
        return max(job.ttl or 0, 0) + max(result_ttl, failure_ttl) + self._tombstone_grace_s

    def _accepted(self, job_id: str, request_id: str, state: str) -> flask.Response:
        status_url = flask.url_for(self._status_endpoint, job_id=job_id)
        response = flask.jsonify(
            {"job_id": job_id, "request_id": request_id, "status": state, "status_url": status_url}
        )
        response.status_code = 202
        response.headers["Location"] = status_url
        return response

    def _replay(self, holder: Claim, ours: Claim) -> flask.Response:
        if holder.fingerprint != ours.fingerprint:
            return refuse(
                REASON_IDEMPOTENCY_CONFLICT, 409, detail="this Idempotency-Key was used with a different payload"
            )
        job = self._fetch(holder.job_id)
        if job is not None:
            return self._accepted(holder.job_id, holder.request_id, state_of(job))
        tombstone, _history = JobRecord(self.queue.connection, holder.job_id).read()
        if tombstone is not None:
            return self._accepted(holder.job_id, holder.request_id, STATE_EXPIRED)
        return refuse(
            REASON_IDEMPOTENCY_IN_PROGRESS,
            409,
            detail="the first request with this Idempotency-Key is still enqueueing",
        )

    def _fetch(self, job_id: str) -> Job | None:
        try:
            return Job.fetch(job_id, connection=self.queue.connection, serializer=self.queue.serializer)
        except NoSuchJobError:
            return None

    def _status(self, job_id: str) -> tuple[dict[str, Any], int]:
        if not _JOB_ID_PATTERN.fullmatch(job_id):
            return {"job_id": job_id, "state": STATE_NOT_FOUND}, 404
        record = JobRecord(self.queue.connection, job_id)
        tombstone, history = record.read()
        job = self._fetch(job_id)
        now = datetime.now(timezone.utc)
        last = history[-1] if history else None
        if job is None:
            if tombstone is None:
                return {"job_id": job_id, "state": STATE_NOT_FOUND}, 404
            if last is None or last.state != STATE_EXPIRED:
                expired = StateChange(STATE_EXPIRED, now)
                record.append_existing([expired])
                history.append(expired)
            body = _body(job_id, STATE_EXPIRED, tombstone.request_id, history)
            return {**body, "attempt": None, "retries_left": None, "next_run_at": None, "error_reason": None}, 200
        view = view_of(job, tombstone.max_retries if tombstone else 0)
        new_changes = changes_since(last, job, view.state, now)
        if tombstone is None:
            # A job enqueued without the contract: start its record now so it, too, can read `expired` later.
            tombstone = Tombstone(request_id=None, queue=job.origin, max_retries=0)
            record.create(tombstone, new_changes, self._record_ttl(job))
        else:
            record.append(new_changes, self._record_ttl(job))
        body = _body(job_id, view.state, tombstone.request_id, history + new_changes)
        return {
            **body,
            "attempt": view.attempt,
            "retries_left": view.retries_left,
            "next_run_at": iso(view.next_run_at) if view.next_run_at else None,
            "error_reason": view.error_reason,
        }, 200


def _body(job_id: str, state: str, request_id: str | None, history: list[StateChange]) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "state": state,
        "request_id": request_id,
        "history": [change.as_json() for change in history],
    }

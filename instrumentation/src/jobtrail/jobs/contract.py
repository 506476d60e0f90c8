"""The job contract's core, framework-free: accept (enqueue + record), status, cancel and result of one contract.

Every method answers with a :class:`Reply` (HTTP status, JSON body, headers) or a :class:`Refusal` (status,
stable reason, optional human detail); the Flask adapter (:mod:`jobtrail.flask.jobs`) only translates them.
A contract answers only for jobs it accepted itself, and only to the actor that asked for them when the
job has one: anything else is ``404 not_found``, exactly like an unknown id.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from jobtrail.conventions import (
    EVENT_JOB_CANCEL_REQUESTED,
    EVENT_JOB_CANCELLED,
    EVENT_JOB_CREATED,
    ITEM_PENDING,
    REASON_ALREADY_TERMINAL,
    REASON_IDEMPOTENCY_CONFLICT,
    REASON_IDEMPOTENCY_IN_PROGRESS,
    REASON_INVALID_IDEMPOTENCY_KEY,
    REASON_JOB_NOT_QUEUED,
    REASON_NOT_FINISHED,
    REASON_NOT_FOUND,
    REASON_STATUS_UNAVAILABLE,
    STATE_CANCELLED,
    STATE_EXPIRED,
    STATE_PARTIALLY_SUCCEEDED,
    STATE_SUCCEEDED,
)
from jobtrail.jobs.idempotency import Claim, IdempotencyStore, Scope, fingerprint, is_idempotency_key
from jobtrail.jobs.record import (
    F_ACTOR,
    F_CANCEL_REQUESTED,
    F_CONTRACT,
    F_MAX_RETRIES,
    F_QUEUE,
    F_REQUEST_ID,
    Event,
    Item,
    JobRecord,
    Snapshot,
    cancelled_items,
    now,
    warn_damaged,
)
from jobtrail.jobs.rqview import WAITING_STATES, fetch, view_of
from jobtrail.jobs.status import not_found_body, status_body
from jobtrail.jobs.worker import record_failure, record_success
from redis.exceptions import RedisError
from rq import Callback, Queue
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL
from rq.exceptions import InvalidJobOperation
from rq.job import Job

_log = logging.getLogger("jobtrail.jobs")

_JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
NO_STORE = {"Cache-Control": "no-store"}
RETRY_AFTER_S = 1
_RESULT_STATES = frozenset({STATE_SUCCEEDED, STATE_PARTIALLY_SUCCEEDED})


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    detail: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


Answer = Reply | Refusal


@dataclass(frozen=True)
class Caller:
    """Who asks: the request id to record, and the app's opaque actor id (None: no actor scoping)."""

    request_id: str | None
    actor: str | None = None


class Contract:
    """Enqueue on ``queue`` and answer for the job until well after RQ forgets it.

    ``name`` (the queue's name by default) marks the jobs this contract accepted; ``status_url(job_id)``
    builds the URL clients poll. The record outlives RQ's result/failure TTL by ``record_grace_s``, so a job
    RQ has dropped reads ``expired`` (with its real outcome), and a job id never accepted reads ``not_found``.
    """

    def __init__(
        self,
        queue: Queue,
        status_url: Callable[[str], str],
        *,
        name: str | None = None,
        idempotency_ttl_s: int = 24 * 3600,
        record_grace_s: int = 7 * 24 * 3600,
    ) -> None:
        self.queue = queue
        self.name = name or queue.name
        self._status_url = status_url
        self._grace_s = record_grace_s
        self._idempotency = IdempotencyStore(queue.connection, idempotency_ttl_s)

    # --- accept -----------------------------------------------------------------------------------
    def accept(
        self,
        caller: Caller,
        func: Callable[..., Any] | str,
        args: tuple[Any, ...],
        job_kwargs: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        payload: Any = None,
        items: Sequence[str] = (),
    ) -> Answer:
        """Enqueue ``func(*args)`` (``job_kwargs`` as ``Queue.enqueue`` takes them) and answer 202.

        ``items`` declares the job's items up front (the ids its function passes to ``run.items``), so the
        status lists them as ``pending`` from the start and a cancel before the job runs marks them ``cancelled``.

        With an idempotency key, the same key and payload from the same actor for the same operation answers
        with the first request's job; another payload is ``409 idempotency_conflict``. Redis down: ``503
        job_not_queued``, nothing enqueued.
        """
        if idempotency_key is not None and not is_idempotency_key(idempotency_key):
            return Refusal(
                422, REASON_INVALID_IDEMPOTENCY_KEY, "Idempotency-Key must be 1 to 255 visible ASCII characters"
            )
        try:
            if idempotency_key is None:
                job = self._enqueue(caller, func, args, job_kwargs, items)
                return self._accepted(job.id, caller.request_id, view_of(job).state)
            scope = Scope(self.name, _operation(func), caller.actor)
            ours = Claim(
                fingerprint(payload), str(job_kwargs.pop("job_id", None) or uuid.uuid4().hex), caller.request_id or ""
            )
            holder = self._idempotency.claim(scope, idempotency_key, ours)
            if holder.job_id != ours.job_id:
                return self._replay(holder, ours)
            try:
                job = self._enqueue(caller, func, args, {**job_kwargs, "job_id": ours.job_id}, items)
            except RedisError:
                with suppress(RedisError):
                    self._idempotency.release(scope, idempotency_key)
                raise
            try:
                self._idempotency.confirm(scope, idempotency_key)
            except RedisError:
                _log.warning("job %s enqueued, but its Idempotency-Key claim could not be extended", job.id)
            return self._accepted(job.id, caller.request_id, view_of(job).state)
        except RedisError as error:
            _log.warning("job not queued: Redis refused (%s)", type(error).__name__)
            return Refusal(503, REASON_JOB_NOT_QUEUED, "the job queue is unreachable; nothing was queued")

    def _enqueue(
        self,
        caller: Caller,
        func: Callable[..., Any] | str,
        args: tuple[Any, ...],
        job_kwargs: dict[str, Any],
        items: Sequence[str],
    ) -> Job:
        # The worker records each attempt through RQ's callbacks: a job of the contract cannot replace them.
        taken = sorted({"on_success", "on_failure"} & set(job_kwargs))
        if taken:
            raise TypeError(f"{', '.join(taken)}: the job contract records each attempt through these RQ callbacks")
        job_kwargs = {"on_success": Callback(record_success), "on_failure": Callback(record_failure), **job_kwargs}
        job_id = str(job_kwargs.pop("job_id", None) or uuid.uuid4().hex)
        retry = job_kwargs.get("retry")
        fields = {
            F_CONTRACT: self.name,
            F_QUEUE: self.queue.name,
            F_REQUEST_ID: caller.request_id or "",
            F_ACTOR: caller.actor or "",
            F_MAX_RETRIES: str(retry.max if retry else 0),
        }
        # The record first: the worker may pick the job up the moment it is queued, and writes into the record.
        record = JobRecord(self.queue.connection, job_id)
        declared = [Item(str(item_id), ITEM_PENDING) for item_id in dict.fromkeys(items)]
        record.create(fields, Event(EVENT_JOB_CREATED, now()), self._record_ttl(job_kwargs), declared)
        try:
            return self.queue.enqueue(func, *args, job_id=job_id, **job_kwargs)  # type: ignore[type-var]
        except RedisError:
            with suppress(RedisError):
                record.delete()
            raise

    def _record_ttl(self, job_kwargs: dict[str, Any]) -> int | None:
        """Longer than RQ keeps the job: its TTL, then the longer of result and failure TTL, then the grace."""
        result_ttl = job_kwargs.get("result_ttl", DEFAULT_RESULT_TTL)
        failure_ttl = job_kwargs.get("failure_ttl", DEFAULT_FAILURE_TTL)
        result_ttl = DEFAULT_RESULT_TTL if result_ttl is None else result_ttl
        failure_ttl = DEFAULT_FAILURE_TTL if failure_ttl is None else failure_ttl
        if result_ttl == -1 or failure_ttl == -1:
            return None
        return max(job_kwargs.get("ttl") or 0, 0) + max(result_ttl, failure_ttl) + self._grace_s

    def _accepted(self, job_id: str, request_id: str | None, state: str) -> Reply:
        status_url = self._status_url(job_id)
        body = {"job_id": job_id, "request_id": request_id, "status": state, "status_url": status_url}
        return Reply(202, body, {"Location": status_url})

    def _replay(self, holder: Claim, ours: Claim) -> Answer:
        if holder.fingerprint != ours.fingerprint:
            return Refusal(409, REASON_IDEMPOTENCY_CONFLICT, "this Idempotency-Key was used with a different payload")
        job = fetch(holder.job_id, self.queue.connection, self.queue.serializer)
        if job is not None:
            return self._accepted(holder.job_id, holder.request_id, view_of(job).state)
        if JobRecord(self.queue.connection, holder.job_id).read().exists:
            return self._accepted(holder.job_id, holder.request_id, STATE_EXPIRED)
        return Refusal(
            409, REASON_IDEMPOTENCY_IN_PROGRESS, "the first request with this Idempotency-Key is still enqueueing"
        )

    # --- reads ------------------------------------------------------------------------------------
    def owned(self, job_id: str, caller: Caller) -> Snapshot | None:
        """The job's record if this contract accepted it and ``caller`` may see it, else None (answer 404)."""
        if not _JOB_ID_PATTERN.fullmatch(job_id):
            return None
        snapshot = JobRecord(self.queue.connection, job_id).read()
        if not snapshot.exists or snapshot.text(F_CONTRACT) != self.name:
            return None
        actor = snapshot.text(F_ACTOR)
        if actor is not None and actor != caller.actor:
            return None
        return snapshot

    def status(self, job_id: str, caller: Caller) -> Answer:
        """The status response (no-store); a read never writes. Redis down: a retryable 503."""
        try:
            job = self._rq_job(job_id) if _JOB_ID_PATTERN.fullmatch(job_id) else None
            snapshot = self.owned(job_id, caller)
            if snapshot is None:
                return Reply(404, not_found_body(job_id), dict(NO_STORE))
            return Reply(200, self._body(snapshot, job), dict(NO_STORE))
        except RedisError as error:
            return _unavailable(error)

    def _rq_job(self, job_id: str) -> Job | None:
        """RQ's job, read BEFORE the record: the worker writes an attempt's outcome into the record before RQ files
        the job as finished or failed, so a record read afterwards is never behind what RQ says. (Read the other
        way round, a job that ran between the two reads looked "succeeded" with no attempt.)"""
        return fetch(job_id, self.queue.connection, self.queue.serializer)

    def _body(self, snapshot: Snapshot, job: Job | None) -> dict[str, Any]:
        body = status_body(snapshot, view_of(job) if job else None, self._status_url(snapshot.job_id), now())
        warn_damaged(snapshot)
        return body

    def result(self, job_id: str, caller: Caller) -> Answer:
        """What a finished job returned (succeeded or partially succeeded), for its own caller only."""
        try:
            snapshot = self.owned(job_id, caller)
            if snapshot is None:
                return Refusal(404, REASON_NOT_FOUND, headers=dict(NO_STORE))
            job = fetch(job_id, self.queue.connection, self.queue.serializer)
            if job is None or snapshot.terminal not in _RESULT_STATES:
                state = snapshot.terminal or (STATE_EXPIRED if job is None else view_of(job).state)
                return Refusal(409, REASON_NOT_FINISHED, f"the job has no result ({state})", dict(NO_STORE))
            return Reply(
                200, {"job_id": job_id, "state": snapshot.terminal, "result": job.return_value()}, dict(NO_STORE)
            )
        except RedisError as error:
            return _unavailable(error)

    # --- cancel -----------------------------------------------------------------------------------
    def cancel(self, job_id: str, caller: Caller) -> Answer:
        """``job_cancel_requested``; a job still waiting is cancelled at once, a running one at its next safe point.

        202 with the status, or 409 ``already_terminal`` (the terminal state says how it ended).
        """
        try:
            snapshot = self.owned(job_id, caller)
            if snapshot is None:
                return Refusal(404, REASON_NOT_FOUND, headers=dict(NO_STORE))
            record = JobRecord(self.queue.connection, job_id)
            requested = Event(
                EVENT_JOB_CANCEL_REQUESTED, now(), detail=f"by {caller.request_id}" if caller.request_id else None
            )
            if not record.append(requested, fields={F_CANCEL_REQUESTED: "1"}):
                return self._already_terminal(record)
            job = fetch(job_id, self.queue.connection, self.queue.serializer)
            if job is not None and view_of(job).state in WAITING_STATES:
                self._cancel_waiting(job, record)
            job = self._rq_job(job_id)
            return Reply(202, self._body(record.read(), job), dict(NO_STORE))
        except RedisError as error:
            return _unavailable(error)

    def _cancel_waiting(self, job: Job, record: JobRecord) -> None:
        """Take the job off RQ's queue or registries, then cancel the run (unless the worker ended it first)."""
        with suppress(InvalidJobOperation):
            job.cancel()
        snapshot = record.read()
        detail = "before it ran again" if snapshot.attempts() else "before it ran"
        event = Event(EVENT_JOB_CANCELLED, now(), detail=detail)
        record.append(event, terminal=STATE_CANCELLED, items=cancelled_items(snapshot.items))

    def _already_terminal(self, record: JobRecord) -> Refusal:
        terminal = record.read().terminal
        return Refusal(409, REASON_ALREADY_TERMINAL, f"the job already ended: {terminal}", dict(NO_STORE))


def _operation(func: Callable[..., Any] | str) -> str:
    return func if isinstance(func, str) else f"{func.__module__}.{func.__qualname__}"


def _unavailable(error: RedisError) -> Refusal:
    _log.warning("job status unavailable: Redis refused (%s)", type(error).__name__)
    headers = {**NO_STORE, "Retry-After": str(RETRY_AFTER_S)}
    return Refusal(503, REASON_STATUS_UNAVAILABLE, "the job store is unreachable; ask again shortly", headers)

"""The worker's side of the contract, through RQ's own job callbacks (attached by the contract at enqueue).

RQ calls ``on_success`` / ``on_failure`` in the worker at the end of each attempt, on the ``Job`` it is about to
file. They write what this attempt caused: ``job_started`` (with RQ's start time and the attempt number, which
continues across operator requeues), then the job's outcome: from its items when it returned
(``job_succeeded``, ``job_partially_succeeded`` or ``job_failed``), or, when it raised, RQ's retry decision
(read once, :func:`jobtrail.rq.retry.retry_decision`): ``job_retry_scheduled`` or the final outcome.
A terminal event lands only while the run is open, so a cancel and a completion cannot both win.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import redis
from jobtrail.conventions import (
    EVENT_JOB_CANCELLED,
    EVENT_JOB_FAILED_FINAL,
    EVENT_JOB_PARTIALLY_SUCCEEDED,
    EVENT_JOB_REQUEUED,
    EVENT_JOB_RETRY_SCHEDULED,
    EVENT_JOB_STARTED,
    EVENT_JOB_SUCCEEDED,
    ITEM_FAILED,
    ITEM_PENDING,
    ITEM_RUNNING,
    ITEM_SUCCEEDED,
    STATE_CANCELLED,
    STATE_FAILED,
    STATE_PARTIALLY_SUCCEEDED,
    STATE_SUCCEEDED,
)
from jobtrail.jobs.record import (
    F_CANCEL_REQUESTED,
    F_FIRST_ERROR,
    F_KEPT_UNTIL,
    F_LAST_ERROR,
    Event,
    Item,
    JobError,
    Snapshot,
    cancelled_items,
    error_json,
    iso,
    now,
    utc,
)
from jobtrail.jobs.rqview import kept_for_s
from jobtrail.jobs.run import JobCancelled, JobRun, end_run
from jobtrail.rq.retry import retry_decision
from rq.job import Job
from rq.utils import str_to_date

_log = logging.getLogger("jobtrail.jobs")
_OUTCOME_EVENT = {
    STATE_SUCCEEDED: EVENT_JOB_SUCCEEDED,
    STATE_PARTIALLY_SUCCEEDED: EVENT_JOB_PARTIALLY_SUCCEEDED,
    STATE_FAILED: EVENT_JOB_FAILED_FINAL,
}


def record_success(job: Job, connection: redis.Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    """``on_success``: the attempt returned; the items say how it went."""
    _guarded(job, connection, None)


def record_failure(job: Job, connection: redis.Redis, *exc_info: Any) -> None:
    """``on_failure``: the attempt raised; RQ retries it, or the items and the error say how it ended."""
    error = exc_info[1] if len(exc_info) > 1 and isinstance(exc_info[1], BaseException) else None
    _guarded(job, connection, error or RuntimeError("the job failed"))


def _guarded(job: Job, connection: redis.Redis, error: BaseException | None) -> None:
    run = end_run(job.id) or JobRun(job, connection)
    try:
        if run.known:
            _record_attempt(job, run, error)
    except Exception:  # a callback that raises would change the job's outcome: never let it
        _log.warning("job %s: could not record how its attempt ended", job.id, exc_info=True)


def _record_attempt(job: Job, run: JobRun, error: BaseException | None) -> None:
    snapshot = run.record.read()
    started = Event(EVENT_JOB_STARTED, _stored_start(job), run.attempt, run=run.run)
    run.record.append(started, mode="any")
    run.emit(started)
    _tell_requeue(run, snapshot)
    if isinstance(error, JobCancelled) or (error is not None and snapshot.text(F_CANCEL_REQUESTED)):
        _cancel(job, run, snapshot)
        return
    at = now()
    fields: dict[str, str] = {}
    if error is not None:
        job_error = JobError.of(error, at)
        fields = {F_FIRST_ERROR: error_json(job_error), F_LAST_ERROR: error_json(job_error)}
        decision = retry_decision(job)
        if decision is not None:
            detail = f"{job_error.type}; next run at {iso(decision.next_run_at)}"
            event = Event(EVENT_JOB_RETRY_SCHEDULED, at, run.attempt, detail=detail, run=run.run)
            if run.record.append(event, fields=fields):
                run.emit(event)
            return
    items = [_final(item) for item in snapshot.items]
    outcome = _outcome(items, failed=error is not None)
    kept = kept_for_s(job, failed=error is not None)
    if kept is not None:
        fields[F_KEPT_UNTIL] = iso(at + timedelta(seconds=kept))
    event = Event(_OUTCOME_EVENT[outcome], at, run.attempt, detail=_summary(items), run=run.run)
    if run.record.append(event, terminal=outcome, fields=fields, items=items):
        run.emit(event)
    else:
        _log.info(
            "job %s: its run had already ended (%s); %s not recorded", job.id, run.record.read().terminal, outcome
        )


def _stored_start(job: Job) -> datetime:
    """RQ's start time as it stored it (what a status read shows while the attempt runs).

    The worker's own ``job.started_at`` is set again in memory a moment later; recording that one would make
    the running attempt's start and the recorded start two different moments.
    """
    raw = job.connection.hget(job.key, "started_at")
    if raw:
        try:
            return utc(str_to_date(raw))
        except ValueError:
            pass
    return utc(job.started_at) if job.started_at else now()


def _cancel(job: Job, run: JobRun, snapshot: Snapshot) -> None:
    """The job stopped at a safe point (or failed after a cancel was asked): cancelled, and RQ must not retry it."""
    job.retries_left = 0  # read by RQ's handle_job_failure right after this callback: no retry of a cancelled job
    if snapshot.terminal is not None:
        return
    event = Event(EVENT_JOB_CANCELLED, now(), run.attempt, run=run.run)
    if run.record.append(event, terminal=STATE_CANCELLED, items=cancelled_items(snapshot.items)):
        run.emit(event)


def _tell_requeue(run: JobRun, snapshot: Snapshot) -> None:
    """First attempt after an operator requeue: the trail learns of the requeue from this attempt span."""
    runs_started = {event.run for event in snapshot.events if event.event == EVENT_JOB_STARTED}
    for event in snapshot.events:
        if event.event == EVENT_JOB_REQUEUED and event.run == run.run and run.run not in runs_started:
            run.emit(event)


def _final(item: Item) -> Item:
    """At the end of a run, an item never finished is failed for good."""
    if item.state in (ITEM_PENDING, ITEM_RUNNING) or (item.state == ITEM_FAILED and not item.final):
        return Item(item.id, ITEM_FAILED, item.attempts, item.error, item.checkpoint, final=True)
    return item


def _outcome(items: list[Item], failed: bool) -> str:
    succeeded = sum(1 for item in items if item.state == ITEM_SUCCEEDED)
    if not items:
        return STATE_FAILED if failed else STATE_SUCCEEDED
    if succeeded == len(items):
        return STATE_SUCCEEDED
    return STATE_PARTIALLY_SUCCEEDED if succeeded else STATE_FAILED


def _summary(items: list[Item]) -> str | None:
    if not items:
        return None
    succeeded = sum(1 for item in items if item.state == ITEM_SUCCEEDED)
    return f"{succeeded} of {len(items)} items succeeded"

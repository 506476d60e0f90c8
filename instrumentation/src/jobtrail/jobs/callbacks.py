"""Worker-side record of every attempt, through RQ's own job callbacks.

A status read sees only the state of the moment: an attempt that starts and fails between two
reads would leave no mark. RQ calls these in the worker at the end of each attempt, before it
files the job, so they write the attempt's start and the state the job is about to take.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import redis
from jobtrail.conventions import STATE_FAILED, STATE_QUEUED, STATE_SCHEDULED, STATE_STARTED, STATE_SUCCEEDED
from jobtrail.jobs.record import JobRecord, StateChange, utc
from rq.job import Job

_log = logging.getLogger(__name__)


def record_success(job: Job, connection: redis.Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    """``on_success`` callback: the attempt started, the job succeeded."""
    _record(job, connection, STATE_SUCCEEDED)


def record_failure(job: Job, connection: redis.Redis, *exc_info: Any) -> None:
    """``on_failure`` callback: the attempt started, then RQ retries the job (now or later) or fails it."""
    _record(job, connection, _state_after_failure(job))


def _state_after_failure(job: Job) -> str:
    """What RQ's worker does next with a failed attempt (``Job.retry``): requeue, schedule or fail."""
    if not job.should_retry:
        return STATE_FAILED
    return STATE_SCHEDULED if job.get_retry_interval() else STATE_QUEUED


def _record(job: Job, connection: redis.Redis, state: str) -> None:
    try:
        now = datetime.now(timezone.utc)
        started_at = utc(job.started_at) if job.started_at else now
        JobRecord(connection, job.id).append_existing([StateChange(STATE_STARTED, started_at), StateChange(state, now)])
    except Exception:  # a callback that raises would change the job's outcome: never let it
        _log.warning("job %s: could not record its state change", job.id, exc_info=True)

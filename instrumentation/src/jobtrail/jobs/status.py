"""Reading an RQ job as the status endpoint's states (shared/CONVENTIONS.md), for RQ 2.x and 3.x.

Pure functions over a fetched ``rq.job.Job``: no Flask, and Redis only through the job itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from jobtrail.conventions import (
    STATE_CANCELLED,
    STATE_DEFERRED,
    STATE_FAILED,
    STATE_QUEUED,
    STATE_SCHEDULED,
    STATE_STARTED,
    STATE_SUCCEEDED,
)
from jobtrail.jobs.record import StateChange, utc
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry

_RQ_STOPPED = "stopped"
# RQ's statuses by value (RQ 3.x adds ``ready_to_enqueue`` and ``rate_limited``, both still waiting to run).
_STATE_OF_RQ_STATUS = {
    "created": STATE_QUEUED,
    "queued": STATE_QUEUED,
    "ready_to_enqueue": STATE_QUEUED,
    "rate_limited": STATE_QUEUED,
    "deferred": STATE_DEFERRED,
    "scheduled": STATE_SCHEDULED,
    "started": STATE_STARTED,
    "finished": STATE_SUCCEEDED,
    "failed": STATE_FAILED,
    _RQ_STOPPED: STATE_FAILED,
    "canceled": STATE_CANCELLED,
}
# States in which the latest attempt has run (or is running) rather than waiting for its turn.
_RAN_STATES = frozenset({STATE_STARTED, STATE_SUCCEEDED, STATE_FAILED})
_EXCEPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
UNKNOWN_ERROR = "unknown_error"


@dataclass(frozen=True)
class JobView:
    state: str
    attempt: int
    retries_left: int
    next_run_at: datetime | None
    error_reason: str | None


def rq_status(job: Job) -> str:
    status = job.get_status(refresh=False)
    return status.value if status is not None else "queued"


def state_of(job: Job) -> str:
    """The conventions' state of a job; a stopped job is ``failed`` (its error reason says ``stopped``)."""
    return _STATE_OF_RQ_STATUS.get(rq_status(job), STATE_QUEUED)


def view_of(job: Job, max_retries: int) -> JobView:
    """State, attempt (1-based; 0 before the first run), retries left, next run time and error reason."""
    state = state_of(job)
    retries_left = job.retries_left or 0
    retries_used = max(max_retries - retries_left, 0)
    attempt = retries_used + (1 if state in _RAN_STATES else 0)
    return JobView(
        state=state,
        attempt=attempt,
        retries_left=retries_left,
        next_run_at=_scheduled_time(job) if state == STATE_SCHEDULED else None,
        error_reason=_error_reason(job) if state == STATE_FAILED else None,
    )


def _scheduled_time(job: Job) -> datetime | None:
    registry = ScheduledJobRegistry(job.origin, connection=job.connection, serializer=job.serializer)
    try:
        return utc(registry.get_scheduled_time(job))
    except NoSuchJobError:
        return None


def _error_reason(job: Job) -> str:
    """The failing exception's class name (never its message: that may hold user data)."""
    if rq_status(job) == _RQ_STOPPED:
        return _RQ_STOPPED
    result = job.latest_result()
    lines = [line.strip() for line in ((result.exc_string if result else None) or "").splitlines() if line.strip()]
    name = lines[-1].split(":", 1)[0].rsplit(".", 1)[-1] if lines else ""
    return name if _EXCEPTION_NAME.fullmatch(name) else UNKNOWN_ERROR


def changes_since(last: StateChange | None, job: Job, state: str, now: datetime) -> list[StateChange]:
    """The state changes that happened since ``last`` was recorded, with RQ's timestamps where it has them.

    Between two reads a job may have run and moved on (started, then succeeded, or scheduled for a
    retry): RQ's ``started_at`` newer than the last record means an attempt started in between.
    """
    if last is not None and last.state == state:
        return []
    floor = last.at if last is not None else None
    changes: list[StateChange] = []
    started_at = utc(job.started_at) if job.started_at else None
    started_since = started_at is not None and (floor is None or started_at > floor)
    if state != STATE_STARTED and started_since and (last is None or last.state != STATE_STARTED):
        changes.append(StateChange(STATE_STARTED, started_at))
        floor = started_at
    rq_moment = started_at if state == STATE_STARTED else (utc(job.ended_at) if job.ended_at else None)
    usable = rq_moment is not None and (floor is None or rq_moment >= floor) and rq_moment <= now
    changes.append(StateChange(state, rq_moment if usable else now))
    return changes

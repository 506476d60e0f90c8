"""RQ's side of a job, read once per status request (RQ 2.x and 3.x).

Reads only: a status request never writes to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from jobtrail.conventions import (
    STATE_CANCELLED,
    STATE_DEFERRED,
    STATE_FAILED,
    STATE_QUEUED,
    STATE_SCHEDULED,
    STATE_STARTED,
    STATE_SUCCEEDED,
)
from jobtrail.jobs.record import utc
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry

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
    "stopped": STATE_FAILED,
    "canceled": STATE_CANCELLED,
}
WAITING_STATES = frozenset({STATE_QUEUED, STATE_DEFERRED, STATE_SCHEDULED})


@dataclass(frozen=True)
class RQView:
    """What RQ says about a job right now."""

    state: str
    started_at: datetime | None
    next_run_at: datetime | None


def fetch(job_id: str, connection: redis.Redis, serializer: Any = None) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection, serializer=serializer)
    except NoSuchJobError:
        return None


def view_of(job: Job) -> RQView:
    status = job.get_status(refresh=False)
    state = _STATE_OF_RQ_STATUS.get(status.value if status is not None else "queued", STATE_QUEUED)
    return RQView(
        state=state,
        started_at=utc(job.started_at) if job.started_at else None,
        next_run_at=_scheduled_time(job) if state == STATE_SCHEDULED else None,
    )


def _scheduled_time(job: Job) -> datetime | None:
    registry = ScheduledJobRegistry(job.origin, connection=job.connection, serializer=job.serializer)
    try:
        return utc(registry.get_scheduled_time(job))
    except NoSuchJobError:
        return None


def kept_for_s(job: Job, failed: bool) -> int | None:
    """How long RQ keeps the finished job (its result TTL, or failure TTL); None: forever."""
    ttl = job.failure_ttl if failed else job.result_ttl
    if ttl is None:
        ttl = DEFAULT_FAILURE_TTL if failed else DEFAULT_RESULT_TTL
    return None if ttl == -1 else max(int(ttl), 0)

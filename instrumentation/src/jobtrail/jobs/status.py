"""The status response (shared/CONVENTIONS.md "The status response"), built from one read of the record and of RQ.

Pure: a :class:`~jobtrail.jobs.record.Snapshot`, RQ's view (None when RQ no longer has the job) and the
clock in, the JSON body out. What RQ says fills in only what the record cannot know yet (an attempt that is
running, a retry's due time); a terminal state in the record is final. Facts derived here (``job_started``
of the running attempt, ``job_expired``) are shown, never written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobtrail.conventions import (
    EVENT_JOB_EXPIRED,
    EVENT_JOB_STARTED,
    STATE_EXPIRED,
    STATE_NOT_FOUND,
    STATE_SCHEDULED,
    STATE_STARTED,
    TERMINAL_STATES,
)
from jobtrail.jobs.record import F_FIRST_ERROR, F_KEPT_UNTIL, F_LAST_ERROR, F_REQUEST_ID, F_STAGE, Event, Snapshot, iso
from jobtrail.jobs.rqview import RQView

_NO_RQ_JOB = "RQ no longer has the job"


def status_body(snapshot: Snapshot, rq: RQView | None, status_url: str, at: datetime) -> dict[str, Any]:
    events = list(snapshot.events)
    terminal = snapshot.terminal
    next_run_at: datetime | None = None
    if rq is None:
        state = STATE_EXPIRED
        kept_until = snapshot.moment(F_KEPT_UNTIL) if terminal else None
        expired_at = kept_until if kept_until is not None and kept_until <= at else None
        events.append(Event(EVENT_JOB_EXPIRED, expired_at, detail=f"{terminal or 'unfinished'}; {_NO_RQ_JOB}"))
    else:
        state = terminal or rq.state
        # An attempt still running (or, after a cancel at a safe point, still ending) has not written its start yet.
        if rq.state == STATE_STARTED and rq.started_at is not None and not _recorded_start(snapshot, rq.started_at):
            events.append(Event(EVENT_JOB_STARTED, rq.started_at, attempt=snapshot.attempts() + 1, run=snapshot.run))
        if state == STATE_SCHEDULED:
            next_run_at = rq.next_run_at
    events.sort(key=lambda event: (event.at is None, event.at or at))
    first_error = snapshot.error(F_FIRST_ERROR)
    last_error = snapshot.error(F_LAST_ERROR)
    stage = snapshot.text(F_STAGE)
    return {
        "job_id": snapshot.job_id,
        "request_id": snapshot.text(F_REQUEST_ID),
        "state": state,
        "terminal": state in TERMINAL_STATES,
        "status_url": status_url,
        "stage": stage,
        "progress": snapshot.progress(),
        "attempt": sum(1 for event in events if event.event == EVENT_JOB_STARTED),
        "next_run_at": iso(next_run_at) if next_run_at else None,
        "first_error": first_error.as_json() if first_error else None,
        "last_error": last_error.as_json() if last_error else None,
        "items": [item.as_json() for item in snapshot.items],
        "events": [event.as_json() for event in events],
    }


def _recorded_start(snapshot: Snapshot, started_at: datetime) -> bool:
    """The worker already wrote this attempt's ``job_started`` (RQ's start time of the running attempt)."""
    moment = iso(started_at)
    return any(event.event == EVENT_JOB_STARTED and event.at and iso(event.at) == moment for event in snapshot.events)


def not_found_body(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id, "state": STATE_NOT_FOUND}

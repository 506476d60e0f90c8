"""Operator repair: a new run of a failed or partially succeeded job, on the same job id, attempt numbers continuing.

The record changes first and atomically (``job_requeued``, a new run, the chosen items back to ``pending``;
refused unless the run ended ``failed`` or ``partially_succeeded``), then RQ gets the job back with its full
retry budget. The worker's next attempt is numbered after the last one, in the record and on the attempt span.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from jobtrail.conventions import (
    EVENT_JOB_REQUEUED,
    ITEM_PENDING,
    ITEM_SUCCEEDED,
    STATE_FAILED,
    STATE_PARTIALLY_SUCCEEDED,
)
from jobtrail.jobs.record import F_MAX_RETRIES, F_PROGRESS, F_STAGE, Event, Item, JobRecord, now
from jobtrail.jobs.rqview import fetch
from jobtrail.rq.carrier import mark_operator_requeue
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

REQUEUABLE = (STATE_FAILED, STATE_PARTIALLY_SUCCEEDED)


class RequeueRefused(Exception):
    """The job cannot be requeued; the message says why in an operator's words."""


@dataclass(frozen=True)
class Requeued:
    job_id: str
    run: int
    items_requeued: int
    next_attempt: int


def requeue(connection: redis.Redis, job_id: str, *, failed_items_only: bool = False) -> Requeued:
    """Requeue ``job_id``: every item again, or with ``failed_items_only`` only those not yet succeeded."""
    record = JobRecord(connection, job_id)
    snapshot = record.read()
    if not snapshot.exists:
        raise RequeueRefused(f"job {job_id}: no jobtrail record (never accepted by a job contract, or expired)")
    if snapshot.terminal not in REQUEUABLE:
        state = snapshot.terminal or "not finished"
        raise RequeueRefused(f"job {job_id} is {state}: only failed or partially succeeded jobs can be requeued")
    job = fetch(job_id, connection)
    if job is None:
        raise RequeueRefused(f"job {job_id}: RQ no longer has the job (expired); enqueue it anew instead")
    again = [
        Item(item.id, ITEM_PENDING, item.attempts, item.error, item.checkpoint)
        for item in snapshot.items
        if not (failed_items_only and item.state == ITEM_SUCCEEDED)
    ]
    scope = "failed items only" if failed_items_only else "all items"
    detail = (
        f"by an operator; {len(again)} of {len(snapshot.items)} items ({scope})" if snapshot.items else "by an operator"
    )
    event = Event(EVENT_JOB_REQUEUED, now(), detail=detail, run=snapshot.run + 1)
    fields = {F_STAGE: "", F_PROGRESS: ""}
    if not record.append(event, mode="requeue", requeue_from=REQUEUABLE, fields=fields, items=again):
        raise RequeueRefused(f"job {job_id} changed meanwhile ({record.read().terminal}); look again")
    job.retries_left = snapshot.number(F_MAX_RETRIES) or None
    if job.id in FailedJobRegistry(job.origin, connection=connection):
        FailedJobRegistry(job.origin, connection=connection).requeue(job)
    else:
        # The job returned (RQ calls it finished): put it back the way RQ's own requeue does, which is no new
        # enqueue (``enqueue_job`` would be traced as one), so the trail keeps one ``send`` for the job.
        queue = Queue(job.origin, connection=connection, serializer=job.serializer)
        job.started_at = job.ended_at = None
        mark_operator_requeue(job.meta, snapshot.attempts())
        with connection.pipeline() as pipe:
            FinishedJobRegistry(job.origin, connection=connection).remove(job, pipeline=pipe)
            queue._enqueue_job(job, pipeline=pipe)
            pipe.execute()
    return Requeued(job_id, snapshot.run + 1, len(again), snapshot.attempts() + 1)

"""The job function's side of the contract: items with checkpoints, stage, progress and safe points for cancelling.

Usage, inside a function enqueued through a job contract::

    from jobtrail.jobs import current_run

    def import_files(files):
        run = current_run()
        run.set_stage("importing")
        for item in run.items([f["name"] for f in files], permanent=(ValueError,)):
            with item:                                  # an exception fails this item, not the job
                import_one(files_by_name[item.id], start_at=item.checkpoint)
        return {"imported": run.count("succeeded")}

``items`` yields only the items not yet succeeded (a retry re-runs what is left), checks for a cancel
before each one (a safe point: items not started then read ``cancelled``) and keeps ``progress``. An
exception of a ``permanent`` type fails its item for good; any other fails it for this attempt, and once
every item was tried the job raises :class:`ItemsFailed` so that RQ's retry (if any) runs them again.
Call :meth:`JobRun.check` where else the job may safely stop. Every fact is written at once, by this side,
and also recorded as an event on the current attempt span (the trail tells it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import redis
from jobtrail.conventions import (
    ATTR_JOB_EVENT_DETAIL,
    ATTR_JOB_ITEM_ID,
    ATTR_JOB_RUN,
    EVENT_ITEM_FAILED_RETRYABLE,
    EVENT_ITEM_FAILED_TERMINAL,
    EVENT_ITEM_STARTED,
    EVENT_ITEM_SUCCEEDED,
    EVENT_JOB_CANCELLED,
    ITEM_FAILED,
    ITEM_PENDING,
    ITEM_RUNNING,
    ITEM_SUCCEEDED,
    STATE_CANCELLED,
)
from jobtrail.jobs.record import (
    F_CANCEL_REQUESTED,
    F_FIRST_ERROR,
    F_ITEM_ORDER,
    F_LAST_ERROR,
    F_PROGRESS,
    F_STAGE,
    Event,
    Item,
    JobError,
    JobRecord,
    cancelled_items,
    error_json,
    now,
)
from opentelemetry import trace
from rq import get_current_job
from rq.job import Job

MAX_ITEMS = 10_000


class JobCancelled(Exception):
    """Raised at a safe point of a cancelled job: the job stops, and RQ does not retry it."""


class ItemsFailed(Exception):
    """Some items failed in this attempt and may succeed on a retry; RQ's retry policy decides."""


class JobRun:
    """One attempt of one contract job, as its function sees it."""

    def __init__(self, job: Job, connection: redis.Redis) -> None:
        self.job_id = job.id
        self.record = JobRecord(connection, job.id)
        snapshot = self.record.read()
        self.known = snapshot.exists
        self.attempt = snapshot.attempts() + 1
        self.run = snapshot.run
        self._span = trace.get_current_span()
        self._items: dict[str, Item] = {item.id: item for item in snapshot.items}
        self._order = [item.id for item in snapshot.items]
        self._retryable_failures = 0

    # --- safe points ------------------------------------------------------------------------------
    def check(self) -> None:
        """A safe point: raise :class:`JobCancelled` if the job was cancelled (items not started read ``cancelled``)."""
        if not self.known:
            return
        snapshot = self.record.read()
        if snapshot.terminal == STATE_CANCELLED:
            raise JobCancelled(f"job {self.job_id} was cancelled")
        if snapshot.text(F_CANCEL_REQUESTED):
            event = Event(EVENT_JOB_CANCELLED, now(), attempt=self.attempt, run=self.run)
            items = cancelled_items(list(self._items.values()))
            if self.record.append(event, terminal=STATE_CANCELLED, items=items):
                self.emit(event)
            raise JobCancelled(f"job {self.job_id} was cancelled")

    # --- stage and progress -----------------------------------------------------------------------
    def set_stage(self, stage: str) -> None:
        """A short word saying what the job is doing now (``loading``, ``rendering``)."""
        self.check()
        self._write(fields={F_STAGE: stage[:64]})

    def set_progress(self, done: int, total: int) -> None:
        self._write(fields={F_PROGRESS: json.dumps({"done": max(done, 0), "total": max(total, 0)})})

    # --- items ------------------------------------------------------------------------------------
    def items(self, ids: Iterable[str], permanent: tuple[type[BaseException], ...] = ()) -> Iterator[ItemRun]:
        """Declare the job's items (the same ids on every attempt) and yield those still to do."""
        wanted = [str(item_id) for item_id in ids]
        if len(wanted) > MAX_ITEMS or len(set(wanted)) != len(wanted):
            raise ValueError(f"items need distinct ids, at most {MAX_ITEMS}")
        new = [Item(item_id, ITEM_PENDING) for item_id in wanted if item_id not in self._items]
        if new:
            self._items.update({item.id: item for item in new})
            self._order += [item.id for item in new]
            self._write(fields={F_ITEM_ORDER: json.dumps(self._order)}, items=new)
        self._retryable_failures = 0
        self._update_progress()
        for item_id in wanted:
            item = self._items[item_id]
            if item.state == ITEM_SUCCEEDED or item.final:
                continue
            self.check()
            yield ItemRun(self, item, permanent)
            self._update_progress()
        if self._retryable_failures:
            failed = [item.id for item in self._items.values() if item.state == ITEM_FAILED and not item.final]
            raise ItemsFailed(f"{len(failed)} item(s) failed and may succeed on a retry: {', '.join(failed[:10])}")

    def count(self, state: str) -> int:
        return sum(1 for item in self._items.values() if item.state == state)

    def all_items(self) -> list[Item]:
        return [self._items[item_id] for item_id in self._order]

    def _update_progress(self) -> None:
        if self._items:
            self.set_progress(self.count(ITEM_SUCCEEDED), len(self._items))

    def _item_done(self, item: Item, error: BaseException | None, final: bool) -> None:
        if error is None:
            item.state, item.error = ITEM_SUCCEEDED, None
            self._write(Event(EVENT_ITEM_SUCCEEDED, now(), self.attempt, item.id, run=self.run), items=[item])
            return
        at = now()
        item.state, item.error, item.final = ITEM_FAILED, JobError.of(error, at), final
        if not final:
            self._retryable_failures += 1
        name = EVENT_ITEM_FAILED_TERMINAL if final else EVENT_ITEM_FAILED_RETRYABLE
        detail = f"{item.error.type}: {item.error.message}"
        fields = {F_FIRST_ERROR: error_json(item.error), F_LAST_ERROR: error_json(item.error)}
        self._write(Event(name, at, self.attempt, item.id, detail, self.run), items=[item], fields=fields)

    def _write(
        self, event: Event | None = None, *, items: list[Item] | None = None, fields: dict[str, str] | None = None
    ) -> None:
        if not self.known:
            return
        if not self.record.append(event, items=items, fields=fields, capped=event is not None):
            raise JobCancelled(f"job {self.job_id} already ended ({self.record.read().terminal})")
        if event is not None:
            self.emit(event)

    def emit(self, event: Event) -> None:
        """The same fact as an event on the attempt span, so the trail can tell it."""
        if not self._span.is_recording():
            return
        attributes: dict[str, Any] = {ATTR_JOB_RUN: event.run}
        if event.item is not None:
            attributes[ATTR_JOB_ITEM_ID] = event.item
        if event.detail is not None:
            attributes[ATTR_JOB_EVENT_DETAIL] = event.detail
        self._span.add_event(event.event, attributes)


class ItemRun:
    """``with item:`` runs one item: ``running`` on entry; succeeded, or failed with its error, on exit."""

    def __init__(self, run: JobRun, item: Item, permanent: tuple[type[BaseException], ...]) -> None:
        self._run = run
        self._item = item
        self._permanent = permanent

    @property
    def id(self) -> str:
        return self._item.id

    @property
    def attempts(self) -> int:
        return self._item.attempts

    @property
    def checkpoint(self) -> Any:
        """What :meth:`save_checkpoint` stored on an earlier attempt (None at first)."""
        return self._item.checkpoint

    def save_checkpoint(self, value: Any) -> None:
        """Keep ``value`` (JSON) so that a retry of this item can resume from it."""
        self._item.checkpoint = value
        self._run._write(items=[self._item])

    def __enter__(self) -> ItemRun:
        self._item.state = ITEM_RUNNING
        self._item.attempts += 1
        event = Event(EVENT_ITEM_STARTED, now(), self._run.attempt, self._item.id, run=self._run.run)
        self._run._write(event, items=[self._item])
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> bool:
        if isinstance(error, JobCancelled) or (error is not None and not isinstance(error, Exception)):
            return False  # a cancel, or SystemExit/KeyboardInterrupt: not this item's failure
        self._run._item_done(self._item, error, final=isinstance(error, self._permanent))
        return True


def current_run() -> JobRun:
    """The :class:`JobRun` of the job this worker is running (one per attempt)."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("jobtrail.jobs.current_run() is called outside an RQ job")
    run = _RUNS.get(job.id)
    if run is None:
        run = JobRun(job, job.connection)
        _RUNS.clear()
        _RUNS[job.id] = run
    return run


def end_run(job_id: str) -> JobRun | None:
    """The attempt ended: forget its run (the next attempt reads the record afresh)."""
    return _RUNS.pop(job_id, None)


_RUNS: dict[str, JobRun] = {}

"""The plain-language timeline of one user action, and the first step that broke, in support's words.

Pure: spans in, a :class:`Timeline` out; no I/O. The clock comes in as ``now`` (the CLI passes the current
time): without it nothing is judged late. It reads the span shapes of shared/CONVENTIONS.md (action span,
fetches, the Flask span, the ``send`` span or a batch's ``create`` spans, one span per attempt, the pickup
marker of an attempt still running), so it works on a stitched trace and just as well on an unstitched one
(it never follows parent ids across the attempt boundary, only job ids, attempt numbers and links).

Every line is an :class:`Entry` with the words support reads and the same facts as fields for ``--json``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from jobtrail.conventions import (
    ATTR_ERROR_REASON,
    ATTR_ERROR_TYPE,
    ATTR_FIRST_ERROR_MESSAGE,
    ATTR_FIRST_ERROR_TYPE,
    ATTR_JOB_ATTEMPT,
    ATTR_JOB_OUTCOME,
    ATTR_JOB_QUEUE_WAIT_MS,
    ATTR_JOB_REQUEUED,
    ATTR_JOB_REQUEUED_AT,
    ATTR_JOB_SCHEDULED_FOR,
    ATTR_JOB_STATE,
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_BATCH_MESSAGE_COUNT,
    ATTR_MESSAGING_DESTINATION_NAME,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_REQUEST_ID,
    ATTR_RETRY_DELAY_S,
    ATTR_RETRY_NEXT_RUN_AT,
    ATTR_UI_ACTION,
    ATTR_UI_RESULT_MESSAGE,
    ATTR_UI_RESULT_STATE,
    ATTR_UI_SCREEN,
    EVENT_JOB_FAILED,
    EVENT_RETRY_SCHEDULED,
    EVENT_UI_RESULT,
    LINK_TYPE_ENQUEUED_BY,
    OPERATION_CREATE,
    OPERATION_PROCESS,
    OPERATION_SEND,
    OUTCOME_ABANDONED,
    OUTCOME_FAILED,
    OUTCOME_RETRY_SCHEDULED,
    OUTCOME_STOPPED,
    OUTCOME_SUCCEEDED,
    pickup_span_name,
)
from jobtrail.trail.model import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    TrailEvent,
    TrailSpan,
)
from opentelemetry.semconv._incubating.attributes.http_attributes import (
    HTTP_METHOD,
    HTTP_STATUS_CODE,
    HTTP_TARGET,
    HTTP_URL,
)
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_PATH

# The first broken step, as support says it.
STEP_UI_NEVER_SENT = "the UI never sent the request"
STEP_API_REJECTED = "the API rejected it"
STEP_NEVER_QUEUED = "the job was never queued"
STEP_JOB_NOT_FINISHED = "the background job did not finish"
STEP_JOB_PARTIAL = "the background job finished only part of its work"
STEP_NOT_FINISHED_YET = "not finished yet"
"""Nothing broke so far: an attempt is running, a retry is scheduled, or the job waits for a worker."""
STEP_NOTHING_BROKEN = "nothing is broken"

HTTP_ACCEPTED = 202
"""The async contract's answer: a job was promised."""
OVERDUE_AFTER = timedelta(minutes=5)
"""How late a due retry (or a queued job) may be before the trail calls it overdue rather than pending."""

# Final states of the trail.
FINAL_SUCCEEDED = "succeeded"
FINAL_PARTLY_DONE = "partly done"
"""The last attempt succeeded, but a step inside it failed (the job reported a partial result)."""
FINAL_DEAD_LETTERED = "dead-lettered"
FINAL_RUNNING = "running"
FINAL_RETRY_PENDING = "retry pending"
FINAL_RETRY_OVERDUE = "retry overdue"
FINAL_WAITING = "queued, not picked up yet"
FINAL_NOT_PICKED_UP = "queued, never picked up"
FINAL_STOPPED = "stopped"
FINAL_NO_JOB = "no job"

_OUTCOME_FINAL = {
    OUTCOME_SUCCEEDED: FINAL_SUCCEEDED,
    OUTCOME_FAILED: FINAL_DEAD_LETTERED,
    OUTCOME_RETRY_SCHEDULED: FINAL_RETRY_PENDING,
    OUTCOME_STOPPED: FINAL_STOPPED,
    OUTCOME_ABANDONED: FINAL_STOPPED,
}


@dataclass(frozen=True)
class Entry:
    """One line of the timeline; ``depth`` 1 is a step inside an attempt; ``fields`` the same facts, structured."""

    at_ns: int
    kind: str
    text: str
    depth: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"at": _iso(self.at_ns), "kind": self.kind, "text": self.text, "depth": self.depth, **self.fields}


@dataclass(frozen=True)
class BrokenStep:
    step: str
    detail: str = ""

    @property
    def text(self) -> str:
        return f"{self.step}: {self.detail}" if self.detail else self.step


@dataclass(frozen=True)
class JobSummary:
    """One background job of the action, as the trail ended up judging it."""

    job_id: str
    queue: str
    final_state: str
    attempts: int
    next_run_at: str | None = None


@dataclass
class Timeline:
    entries: list[Entry]
    first_broken_step: BrokenStep
    final_state: str
    request_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    jobs: list[JobSummary] = field(default_factory=list)

    def lines(self) -> list[str]:
        body = ["  " * entry.depth + entry.text for entry in self.entries]
        return [*body, f"first broken step: {self.first_broken_step.text}"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_ids": self.request_ids,
            "trace_ids": self.trace_ids,
            "job_ids": self.job_ids,
            "jobs": [asdict(job) for job in self.jobs],
            "entries": [entry.to_dict() for entry in self.entries],
            "final_state": self.final_state,
            "first_broken_step": {**asdict(self.first_broken_step), "text": self.first_broken_step.text},
        }


def build_timeline(
    spans: Iterable[TrailSpan],
    tz: tzinfo = timezone.utc,
    now: datetime | None = None,
    overdue_after: timedelta = OVERDUE_AFTER,
) -> Timeline:
    """Turn the spans of one user action into dated, plain-language lines and the first broken step.

    ``now``: when given, a retry or a queued job later than ``overdue_after`` is flagged as overdue.
    """
    return _Builder(list(spans), tz, now, overdue_after).build()


@dataclass
class _Job:
    """One job of the action: where it was created (its ``send`` or ``create`` span, or a batch) and its attempts."""

    job_id: str
    queue: str
    created: TrailSpan | None
    batch: TrailSpan | None = None
    attempts: list[TrailSpan] = field(default_factory=list)


@dataclass(frozen=True)
class _Verdict:
    broken: bool
    step: BrokenStep


class _Builder:
    def __init__(self, spans: list[TrailSpan], tz: tzinfo, now: datetime | None, overdue_after: timedelta) -> None:
        self.tz = tz
        self.now_ns = int(now.timestamp() * 1e9) if now is not None else None
        self.overdue_ns = int(overdue_after.total_seconds() * 1e9)
        self.spans = sorted(spans, key=lambda span: (span.start_ns, span.end_ns))
        self.actions = [span for span in self.spans if ATTR_UI_ACTION in span.attributes]
        self.fetches = [span for span in self.spans if span.kind == KIND_CLIENT and _url(span)]
        self.polls = [span for span in self.fetches if ATTR_JOB_STATE in span.attributes]
        self.servers = [span for span in self.spans if span.kind == KIND_SERVER]
        self.sends = [span for span in self.spans if _operation(span) == OPERATION_SEND]
        self.creates = [span for span in self.spans if _operation(span) == OPERATION_CREATE and _job_id(span)]
        attempts = [span for span in self.spans if span.kind == KIND_CONSUMER and _operation(span) == OPERATION_PROCESS]
        attempt_ids = {attempt.span_id for attempt in attempts}
        markers = [span for span in self.spans if _is_pickup_marker(span)]
        # A marker whose attempt span has not arrived stands for that attempt: it is running.
        self.running = {marker.span_id: marker for marker in markers if marker.parent_span_id not in attempt_ids}
        marker_ids = {marker.span_id for marker in markers}
        self.steps: dict[str, list[TrailSpan]] = defaultdict(list)
        owners = attempt_ids | {marker.parent_span_id for marker in self.running.values()}
        for span in self.spans:
            if span.parent_span_id in owners and span.span_id not in marker_ids:
                self.steps[span.parent_span_id].append(span)
        self.jobs = self._jobs([*attempts, *self.running.values()])
        # Status polls reach the API too; they are summarised, not told one by one.
        self.api_calls = [span for span in self.servers if not self._is_poll(span)]
        self.entries: list[Entry] = []

    def _jobs(self, attempts: list[TrailSpan]) -> dict[str, _Job]:
        """Every job of the action by id, in the order they were created; attempts sorted by number."""
        jobs: dict[str, _Job] = {}
        by_creator: dict[str, TrailSpan] = {}
        for creator in [*self.sends, *self.creates]:
            by_creator[creator.span_id] = creator
            job_id = _job_id(creator)
            if job_id:
                jobs.setdefault(job_id, _Job(job_id, _queue(creator), creator))
        for batch in self.sends:
            # Semconv batch shape: the send span links to each message's create span.
            for link in batch.links:
                create = by_creator.get(link.span_id)
                if create is not None and create is not batch and _job_id(create) in jobs:
                    jobs[_job_id(create)].batch = batch
        for create in self.creates:
            # Without those links (a backend that dropped them): the create spans beside the batch's send span.
            job = jobs[_job_id(create)]
            if job.batch is None:
                job.batch = next((send for send in self._batch_sends() if _siblings(send, create)), None)
        for attempt in attempts:
            job_id = _job_id(attempt)
            if job_id not in jobs:
                # No span of its own: a job of an older-shape batch (its attempts link to the batch's send span),
                # or one whose creation is outside these spans.
                found = next((by_creator[id_] for id_ in _enqueued_by(attempt) if id_ in by_creator), None)
                its_batch = found if found is not None and not _job_id(found) else None
                jobs[job_id] = _Job(job_id, _queue(attempt), None, batch=its_batch)
            jobs[job_id].attempts.append(attempt)
        for job in jobs.values():
            job.attempts.sort(key=lambda span: (_int(span.attributes.get(ATTR_JOB_ATTEMPT)), span.start_ns))
        return jobs

    def build(self) -> Timeline:
        self._tell_actions()
        self._tell_fetch_failures()
        self._tell_api_calls()
        self._tell_polls()
        self._tell_failed_sends()
        self._tell_batches()
        summaries = [self._tell_job(job) for job in self.jobs.values()]
        finals = [summary.final_state for summary in summaries]
        finals.extend(FINAL_NOT_PICKED_UP for _batch, missing in self._batches_missing_jobs() if missing)
        self.entries.sort(key=lambda entry: entry.at_ns)
        final_state = _worst(finals) if finals else FINAL_NO_JOB
        self._append(
            self.spans[-1].end_ns if self.spans else 0, "final", f"final: {final_state}", final_state=final_state
        )
        return Timeline(
            entries=self.entries,
            first_broken_step=self._first_broken_step(),
            final_state=final_state,
            request_ids=_distinct(span.attributes.get(ATTR_REQUEST_ID) for span in self.spans),
            trace_ids=_distinct(span.trace_id for span in self.spans),
            job_ids=list(self.jobs),
            jobs=summaries,
        )

    # --- the lines ----------------------------------------------------------------------------------
    def _tell_actions(self) -> None:
        for action in self.actions:
            screen = action.attributes.get(ATTR_UI_SCREEN)
            where = f' on screen "{screen}"' if screen else ""
            label = action.attributes.get(ATTR_UI_ACTION) or action.name
            text = f'action "{label}" clicked at {self._time(action.start_ns)}{where}'
            self._append(action.start_ns, "action", text, span=action, action=label, screen=screen)
            for event in action.events:
                if event.name == EVENT_UI_RESULT:
                    message = event.attributes.get(ATTR_UI_RESULT_MESSAGE, "")
                    state = event.attributes.get(ATTR_UI_RESULT_STATE, "")
                    shown = f'the page showed "{message}" at {self._time(event.time_ns)} ({state})'
                    self._append(event.time_ns, "ui_result", shown, span=action, message=message, state=state)

    def _tell_fetch_failures(self) -> None:
        for fetch in self.fetches:
            if fetch.status_error and not self._reached_api(fetch):
                why = fetch.status_message or _error(fetch, "no answer")
                text = (
                    f"the page's request {_method(fetch)} {_url(fetch)} failed at {self._time(fetch.start_ns)}: {why}"
                )
                self._append(fetch.start_ns, "fetch_failed", text, span=fetch, url=_url(fetch), error=why)

    def _tell_api_calls(self) -> None:
        for call in self.api_calls:
            status = _status(call)
            reason = call.attributes.get(ATTR_ERROR_REASON)
            what = f"{_method(call)} {_route(call)}".strip()
            at = self._time(call.start_ns)
            if status >= 400:
                because = f" ({reason})" if reason else ""
                text = f"API rejected {what} at {at} with {status}{because}"
            else:
                text = f"API accepted {what} at {at}" + (f" ({status})" if status else "")
            self._append(
                call.start_ns,
                "api",
                text,
                span=call,
                method=_method(call),
                route=_route(call),
                status=status or None,
                reason=reason,
            )

    def _tell_polls(self) -> None:
        polls = self.polls or [server for server in self.servers if self._is_poll(server)]
        if not polls:
            return
        last = polls[-1]
        state = last.attributes.get(ATTR_JOB_STATE)
        saw = f'; it last saw "{state}" at {self._time(last.end_ns)}' if state else ""
        times = "once" if len(polls) == 1 else f"{len(polls)} times"
        text = f"the page checked the job's status {times}{saw}"
        self._append(last.end_ns, "polls", text, span=last, count=len(polls), last_state=state)

    def _tell_failed_sends(self) -> None:
        for send in self.sends:
            if send.status_error:
                at = self._time(send.start_ns)
                why = _error(send)
                text = f'queuing the job on "{_queue(send)}" failed at {at}: {why}'
                self._append(send.start_ns, "queue_failed", text, span=send, queue=_queue(send), error=why)

    def _tell_batches(self) -> None:
        for batch in self._batch_sends():
            count = _int(batch.attributes.get(ATTR_MESSAGING_BATCH_MESSAGE_COUNT))
            jobs = [job.job_id for job in self.jobs.values() if job.batch is batch]
            size = f"{count} jobs" if count else "jobs"
            text = f'{size} queued together at {self._time(batch.start_ns)} on queue "{_queue(batch)}" (enqueue_many)'
            self._append(batch.start_ns, "batch", text, span=batch, queue=_queue(batch), count=count, job_ids=jobs)
        for batch, missing in self._batches_missing_jobs():
            if missing:
                text = (
                    f"{missing} job(s) of the batch queued at {self._time(batch.start_ns)} have no attempt in the trail"
                )
                self._append(batch.start_ns, "batch_unaccounted", text, span=batch, count=missing)

    def _tell_job(self, job: _Job) -> JobSummary:
        if job.created is not None and not job.created.status_error:
            created = job.created
            scheduled = created.attributes.get(ATTR_JOB_SCHEDULED_FOR)
            later = f", to run at {self._clock(scheduled)}" if scheduled else ""
            text = f'job {job.job_id} queued at {self._time(created.start_ns)} on queue "{job.queue}"{later}'
            self._append(
                created.start_ns,
                "queued",
                text,
                span=created,
                job_id=job.job_id,
                queue=job.queue,
                scheduled_for=scheduled,
            )
        if job.created is not None and job.created.status_error:
            return JobSummary(job.job_id, job.queue, FINAL_NO_JOB, 0)
        for attempt in job.attempts:
            self._tell_attempt(attempt)
        final = self._final_state(job)
        next_run = self._next_run_at(job)
        summary = JobSummary(job.job_id, job.queue, final, len(job.attempts), next_run)
        if not job.attempts:
            if job.created is not None:
                text = f"job {job.job_id} " + ("not picked up yet" if final == FINAL_WAITING else "never picked up")
                self._append(job.created.end_ns, "job_final", text, job_id=job.job_id, final_state=final, attempts=0)
            return summary
        last = job.attempts[-1]
        count = "1 attempt" if len(job.attempts) == 1 else f"{len(job.attempts)} attempts"
        fields: dict[str, Any] = {"job_id": job.job_id, "final_state": final, "attempts": len(job.attempts)}
        if last.span_id in self.running:
            text = f"job {job.job_id} still running: attempt {_attempt_number(last)} since {self._time(last.start_ns)}"
        else:
            text = f"job {job.job_id} {final} at {self._time(last.end_ns)} after {count}"
        steps = self._steps_of(last)
        if final == FINAL_PARTLY_DONE:
            text += f" ({sum(1 for step in steps if step.status_error)} of {len(steps)} steps failed)"
        if final in (FINAL_RETRY_PENDING, FINAL_RETRY_OVERDUE) and next_run:
            due = f"attempt {_attempt_number(last) + 1} {'was due' if final == FINAL_RETRY_OVERDUE else 'scheduled'}"
            text += f"; {due} at {self._clock(next_run)}"
            fields["next_run_at"] = next_run
            fields["overdue"] = final == FINAL_RETRY_OVERDUE
        failed = last.event(EVENT_JOB_FAILED)
        if failed is not None:
            text += f" (first error: {_first_error(failed)}; last error: {_error(last, 'unknown')})"
            fields["first_error"] = _first_error(failed)
            fields["last_error"] = _error(last, "unknown")
        self._append(max(last.end_ns, last.start_ns), "job_final", text, fields=fields)
        return summary

    def _tell_attempt(self, attempt: TrailSpan) -> None:
        number = _attempt_number(attempt) or "?"
        job_id = _job_id(attempt)
        fields: dict[str, Any] = {"job_id": job_id, "attempt": _attempt_number(attempt) or None}
        wait_ms = attempt.attributes.get(ATTR_JOB_QUEUE_WAIT_MS)
        if attempt.attributes.get(ATTR_JOB_REQUEUED) is True:
            requeued_ns = self._requeued_at(attempt)
            text = f"job {job_id} requeued by an operator at {self._time(requeued_ns)}"
            self._append(requeued_ns, "requeued", text, span=attempt, job_id=job_id, attempt=fields["attempt"])
        text = f"attempt {number} picked up at {self._time(attempt.start_ns)}"
        if isinstance(wait_ms, (int, float)):
            text += f" after {wait_ms / 1000:.1f} s in queue"
            fields["queue_wait_s"] = round(wait_ms / 1000, 3)
        if attempt.span_id in self.running:
            text += ", still running"
            fields["outcome"] = None
            fields["running"] = True
        outcome = attempt.attributes.get(ATTR_JOB_OUTCOME)
        if outcome is not None:
            fields["outcome"] = outcome
            fields["duration_s"] = _duration_s(attempt)
        if outcome == OUTCOME_SUCCEEDED:
            text += f", succeeded in {_seconds(attempt)}"
        elif outcome in (OUTCOME_RETRY_SCHEDULED, OUTCOME_FAILED):
            text += f", failed: {_error(attempt)}"
            fields["error_type"] = attempt.attributes.get(ATTR_ERROR_TYPE)
            retry = attempt.event(EVENT_RETRY_SCHEDULED)
            if outcome == OUTCOME_RETRY_SCHEDULED and retry is not None:
                delay = retry.attributes.get(ATTR_RETRY_DELAY_S)
                next_run = retry.attributes.get(ATTR_RETRY_NEXT_RUN_AT)
                text += f"; retry scheduled in {_number(delay)} s" if delay is not None else "; retry scheduled"
                text += f" (at {self._clock(next_run)})" if next_run else ""
                fields.update(retry_delay_s=delay, next_run_at=next_run)
            elif outcome == OUTCOME_FAILED:
                text += "; no retries left"
        elif outcome == OUTCOME_STOPPED:
            text += ", stopped before it finished"
        elif outcome == OUTCOME_ABANDONED:
            text += ", abandoned (the worker died during the job)"
        self._append(attempt.start_ns, "attempt", text, span=attempt, fields=fields)
        for step in self._steps_of(attempt):
            error = _error(step) if step.status_error else None
            outcome_text = f"failed: {error}" if error else f"done in {_seconds(step)}"
            step_fields: dict[str, Any] = {"job_id": job_id, "attempt": fields["attempt"], "name": step.name}
            step_fields.update(failed=step.status_error, error=error, duration_s=_duration_s(step))
            text = f'step "{step.name}" {outcome_text}'
            self._append(step.start_ns, "step", text, depth=1, span=step, fields=step_fields)

    # --- the judgement ------------------------------------------------------------------------------
    def _final_state(self, job: _Job) -> str:
        if not job.attempts:
            return FINAL_WAITING if self._still_waiting(job) else FINAL_NOT_PICKED_UP
        last = job.attempts[-1]
        if last.span_id in self.running:
            return FINAL_RUNNING
        final = _OUTCOME_FINAL.get(str(last.attributes.get(ATTR_JOB_OUTCOME)), FINAL_STOPPED)
        if final == FINAL_SUCCEEDED and any(step.status_error for step in self._steps_of(last)):
            return FINAL_PARTLY_DONE
        if final == FINAL_RETRY_PENDING and self._is_overdue(self._next_run_at(job)):
            return FINAL_RETRY_OVERDUE
        return final

    def _first_broken_step(self) -> BrokenStep:
        if self.actions and not self.api_calls and not self.sends and not self.creates:
            failure = next((fetch for fetch in self.fetches if fetch.status_error), None)
            detail = "the action started but no request reached the API"
            if failure is not None:
                detail = f"the browser's request failed ({failure.status_message or 'no answer'})"
            return BrokenStep(STEP_UI_NEVER_SENT, detail)
        queued = [job for job in self.jobs.values() if job.created is None or not job.created.status_error]
        failed_send = next((send for send in self.sends if send.status_error), None)
        if not queued and failed_send is not None:
            return BrokenStep(STEP_NEVER_QUEUED, f"queuing failed: {_error(failed_send)}")
        rejected = next((call for call in self.api_calls if _status(call) >= 400), None)
        if rejected is not None:
            reason = rejected.attributes.get(ATTR_ERROR_REASON)
            return BrokenStep(STEP_API_REJECTED, f"{_status(rejected)} {reason}" if reason else str(_status(rejected)))
        unaccounted = [(batch, missing) for batch, missing in self._batches_missing_jobs() if missing]
        if not queued and not unaccounted and not self._batch_sends():
            if any(_status(call) == HTTP_ACCEPTED for call in self.api_calls):
                return BrokenStep(STEP_NEVER_QUEUED, "the API accepted the request but no job was put on a queue")
            return BrokenStep(STEP_NOTHING_BROKEN, "no background job belongs to this action")
        verdicts = [self._verdict(job, several=len(queued) > 1) for job in queued]
        for batch, missing in unaccounted:
            detail = f"{missing} job(s) of the batch queued at {self._time(batch.start_ns)} were never picked up"
            verdicts.append(_Verdict(True, BrokenStep(STEP_JOB_NOT_FINISHED, detail)))
        for wanted in (True, False):
            found = next((v.step for v in verdicts if v.broken == wanted and v.step.step != STEP_NOTHING_BROKEN), None)
            if found is not None:
                return found
        fine = [v.step.detail for v in verdicts if v.step.detail]
        return BrokenStep(STEP_NOTHING_BROKEN, "; ".join(fine))

    def _verdict(self, job: _Job, several: bool) -> _Verdict:
        """This job's broken step (``broken``), or why it is not finished yet, or what went fine."""
        final = self._final_state(job)
        who = f"job {job.job_id}: " if several else ""
        if final == FINAL_WAITING:
            return _Verdict(False, BrokenStep(STEP_NOT_FINISHED_YET, f"{who}queued, not picked up yet"))
        if final == FINAL_NOT_PICKED_UP:
            return _Verdict(
                True, BrokenStep(STEP_JOB_NOT_FINISHED, f"job {job.job_id} was never picked up by a worker")
            )
        last = job.attempts[-1]
        number = _attempt_number(last)
        if final == FINAL_RUNNING:
            detail = f"{who}attempt {number} picked up at {self._time(last.start_ns)}, still running"
            return _Verdict(False, BrokenStep(STEP_NOT_FINISHED_YET, detail))
        next_run = self._next_run_at(job)
        if final == FINAL_RETRY_PENDING:
            when = f" at {self._clock(next_run)}" if next_run else ""
            return _Verdict(False, BrokenStep(STEP_NOT_FINISHED_YET, f"{who}attempt {number + 1} scheduled{when}"))
        if final == FINAL_RETRY_OVERDUE:
            late = self._late_by(next_run)
            detail = (
                f"job {job.job_id}: attempt {number + 1} was due at {self._clock(next_run)} and is {late} overdue "
                "(is a worker with the scheduler running on its queue?)"
            )
            return _Verdict(True, BrokenStep(STEP_JOB_NOT_FINISHED, detail))
        if final not in (FINAL_SUCCEEDED, FINAL_PARTLY_DONE):
            return _Verdict(True, BrokenStep(STEP_JOB_NOT_FINISHED, self._unfinished_detail(job.job_id, last)))
        failed_step = next((step for step in self._steps_of(last) if step.status_error), None)
        if failed_step is not None:
            detail = f'step "{failed_step.name}" failed: {_error(failed_step)}'
            return _Verdict(True, BrokenStep(STEP_JOB_PARTIAL, detail))
        if len(job.attempts) > 1:
            failed = len(job.attempts) - 1
            first_error = _error(job.attempts[0], "an error")
            detail = f"job {job.job_id} succeeded on attempt {number} after {failed} failed (first: {first_error})"
            requeues = sum(1 for attempt in job.attempts if attempt.attributes.get(ATTR_JOB_REQUEUED) is True)
            if requeues:
                detail += "; requeued by an operator" + (f" {requeues} times" if requeues > 1 else "")
            return _Verdict(False, BrokenStep(STEP_NOTHING_BROKEN, detail))
        return _Verdict(False, BrokenStep(STEP_NOTHING_BROKEN))

    def _unfinished_detail(self, job_id: str, last: TrailSpan) -> str:
        outcome = last.attributes.get(ATTR_JOB_OUTCOME)
        number = last.attributes.get(ATTR_JOB_ATTEMPT, "?")
        failed = last.event(EVENT_JOB_FAILED)
        if outcome == OUTCOME_FAILED and failed is not None:
            return f"job {job_id} dead-lettered after attempt {number}; first error {_first_error(failed)}"
        return f"job {job_id} attempt {number} ended {outcome or 'without an outcome'}"

    @staticmethod
    def _requeued_at(attempt: TrailSpan) -> int:
        """When the operator put the job back: its ``rq.job.requeued_at``, else the attempt's start minus its wait."""
        given = _parse_iso(attempt.attributes.get(ATTR_JOB_REQUEUED_AT))
        if given is not None:
            return int(given.timestamp() * 1e9)
        wait_ms = attempt.attributes.get(ATTR_JOB_QUEUE_WAIT_MS)
        return attempt.start_ns - (int(wait_ms * 1e6) if isinstance(wait_ms, (int, float)) else 0)

    def _next_run_at(self, job: _Job) -> str | None:
        if not job.attempts or job.attempts[-1].attributes.get(ATTR_JOB_OUTCOME) != OUTCOME_RETRY_SCHEDULED:
            return None
        retry = job.attempts[-1].event(EVENT_RETRY_SCHEDULED)
        next_run = retry.attributes.get(ATTR_RETRY_NEXT_RUN_AT) if retry else None
        return str(next_run) if next_run else None

    def _still_waiting(self, job: _Job) -> bool:
        """A job with no attempt yet: queued a moment ago (or due later), rather than never picked up."""
        if self.now_ns is None or job.created is None:
            return False
        due = _parse_iso(job.created.attributes.get(ATTR_JOB_SCHEDULED_FOR))
        due_ns = int(due.timestamp() * 1e9) if due else job.created.start_ns
        return self.now_ns - due_ns <= self.overdue_ns

    def _is_overdue(self, iso: str | None) -> bool:
        due = _parse_iso(iso)
        return self.now_ns is not None and due is not None and self.now_ns - due.timestamp() * 1e9 > self.overdue_ns

    def _late_by(self, iso: str | None) -> str:
        due = _parse_iso(iso)
        if self.now_ns is None or due is None:
            return "long"
        minutes = (self.now_ns / 1e9 - due.timestamp()) / 60
        return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"

    # --- batches ------------------------------------------------------------------------------------
    def _batch_sends(self) -> list[TrailSpan]:
        """``send`` spans that carry no message id: one enqueue_many call for several jobs."""
        return [send for send in self.sends if not _job_id(send) and not send.status_error]

    def _batches_missing_jobs(self) -> list[tuple[TrailSpan, int]]:
        """Per batch: how many of its jobs (by its message count) have nothing in the trail."""
        result = []
        for batch in self._batch_sends():
            count = _int(batch.attributes.get(ATTR_MESSAGING_BATCH_MESSAGE_COUNT))
            seen = sum(1 for job in self.jobs.values() if job.batch is batch)
            result.append((batch, max(count - seen, 0)))
        return result

    # --- helpers ----------------------------------------------------------------------------------------
    def _steps_of(self, attempt: TrailSpan) -> list[TrailSpan]:
        """The job's own spans inside an attempt (a running attempt's marker stands in for the attempt span)."""
        owner = attempt.parent_span_id if attempt.span_id in self.running else attempt.span_id
        return self.steps.get(owner, [])

    def _is_poll(self, server: TrailSpan) -> bool:
        """A GET answered 2xx/3xx from which nothing was queued: the page asking how the job is doing."""
        method = str(server.attribute(HTTP_REQUEST_METHOD, HTTP_METHOD) or "").upper()
        status = _status(server)
        queued_here = any(send.parent_span_id == server.span_id for send in [*self.sends, *self.creates])
        return method == "GET" and status < 400 and not queued_here

    def _reached_api(self, fetch: TrailSpan) -> bool:
        return any(server.parent_span_id == fetch.span_id for server in self.servers)

    def _append(
        self,
        at_ns: int,
        kind: str,
        text: str,
        depth: int = 0,
        span: TrailSpan | None = None,
        fields: dict[str, Any] | None = None,
        **more: Any,
    ) -> None:
        """One entry; ``fields`` and ``more`` are its facts for JSON (None values left out), plus where it came from."""
        where = {"trace_id": span.trace_id, "span_id": span.span_id, "service": span.service} if span else {}
        facts = {key: value for key, value in {**(fields or {}), **more}.items() if value is not None}
        self.entries.append(Entry(at_ns, kind, text, depth, {**facts, **where}))

    def _time(self, ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, self.tz).strftime("%H:%M:%S")

    def _clock(self, iso: Any) -> str:
        """An ISO 8601 time from an attribute, told like every other time of the trail (as given if unreadable)."""
        moment = _parse_iso(iso)
        return moment.astimezone(self.tz).strftime("%H:%M:%S") if moment else str(iso)


def _worst(finals: Sequence[str]) -> str:
    """With several jobs in one action, the trail's final state is the least finished one."""
    order = (
        FINAL_NO_JOB,
        FINAL_NOT_PICKED_UP,
        FINAL_RETRY_OVERDUE,
        FINAL_STOPPED,
        FINAL_DEAD_LETTERED,
        FINAL_WAITING,
        FINAL_RUNNING,
        FINAL_RETRY_PENDING,
        FINAL_PARTLY_DONE,
    )
    return next((state for state in order if state in finals), FINAL_SUCCEEDED)


def _is_pickup_marker(span: TrailSpan) -> bool:
    """The zero-duration ``pickup {queue}`` span a worker exports when an attempt starts."""
    return (
        span.kind == KIND_INTERNAL
        and ATTR_JOB_ATTEMPT in span.attributes
        and span.name == pickup_span_name(_queue(span))
        and bool(_job_id(span))
    )


def _siblings(send: TrailSpan, create: TrailSpan) -> bool:
    """A batch's ``send`` span and a ``create`` span of the same call: same parent, same queue, same trace."""
    same_place = (send.trace_id, send.parent_span_id, _queue(send)) == (
        create.trace_id,
        create.parent_span_id,
        _queue(create),
    )
    return same_place and bool(send.parent_span_id)


def _enqueued_by(span: TrailSpan) -> list[str]:
    return [link.span_id for link in span.links if link.attributes.get(ATTR_LINK_TYPE) == LINK_TYPE_ENQUEUED_BY]


def _operation(span: TrailSpan) -> str | None:
    if span.kind not in (KIND_PRODUCER, KIND_CLIENT, KIND_CONSUMER):
        return None
    value = span.attributes.get(ATTR_MESSAGING_OPERATION_TYPE)
    return str(value) if value is not None else None


def _attempt_number(span: TrailSpan) -> int:
    return _int(span.attributes.get(ATTR_JOB_ATTEMPT))


def _queue(span: TrailSpan) -> str:
    return str(span.attributes.get(ATTR_MESSAGING_DESTINATION_NAME, ""))


def _method(span: TrailSpan) -> str:
    return str(span.attribute(HTTP_REQUEST_METHOD, HTTP_METHOD) or "")


def _route(span: TrailSpan) -> str:
    return str(span.attribute(HTTP_ROUTE, URL_PATH, HTTP_TARGET) or span.name)


def _url(span: TrailSpan) -> str:
    return str(span.attribute(URL_FULL, HTTP_URL) or "")


def _job_id(span: TrailSpan) -> str:
    return str(span.attributes.get(ATTR_MESSAGING_MESSAGE_ID, ""))


def _status(span: TrailSpan) -> int:
    return _int(span.attribute(HTTP_RESPONSE_STATUS_CODE, HTTP_STATUS_CODE))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _duration_s(span: TrailSpan) -> float:
    return round(max(span.end_ns - span.start_ns, 0) / 1e9, 3)


def _seconds(span: TrailSpan) -> str:
    return f"{max(span.end_ns - span.start_ns, 0) / 1e9:.2f} s"


def _short_type(error_type: Any) -> str:
    """``smtplib.SMTPAuthenticationError`` -> ``SMTPAuthenticationError``: the class name support searches for."""
    return str(error_type).rpartition(".")[2]


def _error(span: TrailSpan, default: str = "error") -> str:
    """What went wrong on a span: its ``error.type``, else its status message (the SDK's ``Type: message``)."""
    error_type = span.attributes.get(ATTR_ERROR_TYPE)
    return _short_type(error_type) if error_type else span.status_message or default


def _first_error(failed: TrailEvent) -> str:
    """The first attempt's error, kept on the final failure event: type and message."""
    error_type = _short_type(failed.attributes.get(ATTR_FIRST_ERROR_TYPE) or "unknown")
    message = failed.attributes.get(ATTR_FIRST_ERROR_MESSAGE)
    return f"{error_type}: {message}" if message else error_type


def _parse_iso(value: Any) -> datetime | None:
    """An ISO 8601 attribute as an aware datetime (UTC when it names no zone), or None when unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _distinct(values: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(str(value) for value in values if value))


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat().replace("+00:00", "Z")

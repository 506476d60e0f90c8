"""The plain-language timeline of one user action, and the first step that broke, in support's words.

Pure: spans in, a :class:`Timeline` out; no I/O, no clock. It reads the span shapes of
shared/CONVENTIONS.md (action span, fetches, the Flask span, the ``send`` span, one span per attempt),
so it works on a stitched trace and just as well on an unstitched one (it never follows parent ids
across the attempt boundary, only job ids and attempt numbers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any

from jobtrail.conventions import (
    ATTR_ERROR_REASON,
    ATTR_ERROR_TYPE,
    ATTR_FIRST_ERROR_MESSAGE,
    ATTR_FIRST_ERROR_TYPE,
    ATTR_JOB_ATTEMPT,
    ATTR_JOB_OUTCOME,
    ATTR_JOB_QUEUE_WAIT_MS,
    ATTR_JOB_SCHEDULED_FOR,
    ATTR_JOB_STATE,
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
    OPERATION_PROCESS,
    OPERATION_SEND,
    OUTCOME_ABANDONED,
    OUTCOME_FAILED,
    OUTCOME_RETRY_SCHEDULED,
    OUTCOME_STOPPED,
    OUTCOME_SUCCEEDED,
)
from jobtrail.trail.model import KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER, TrailEvent, TrailSpan
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
STEP_NOTHING_BROKEN = "nothing is broken"

HTTP_ACCEPTED = 202
"""The async contract's answer: a job was promised."""

# Final states of the trail.
FINAL_SUCCEEDED = "succeeded"
FINAL_PARTLY_DONE = "partly done"
"""The last attempt succeeded, but a step inside it failed (the job reported a partial result)."""
FINAL_DEAD_LETTERED = "dead-lettered"
FINAL_RETRY_PENDING = "retry pending"
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
    """One line of the timeline; ``depth`` 1 is a step inside an attempt."""

    at_ns: int
    kind: str
    text: str
    depth: int = 0


@dataclass(frozen=True)
class BrokenStep:
    step: str
    detail: str = ""

    @property
    def text(self) -> str:
        return f"{self.step}: {self.detail}" if self.detail else self.step


@dataclass
class Timeline:
    entries: list[Entry]
    first_broken_step: BrokenStep
    final_state: str
    request_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        body = ["  " * entry.depth + entry.text for entry in self.entries]
        return [*body, f"first broken step: {self.first_broken_step.text}"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_ids": self.request_ids,
            "trace_ids": self.trace_ids,
            "job_ids": self.job_ids,
            "entries": [{**asdict(entry), "at": _iso(entry.at_ns)} for entry in self.entries],
            "final_state": self.final_state,
            "first_broken_step": {**asdict(self.first_broken_step), "text": self.first_broken_step.text},
        }


def build_timeline(spans: Iterable[TrailSpan], tz: tzinfo = timezone.utc) -> Timeline:
    """Turn the spans of one user action into dated, plain-language lines and the first broken step."""
    return _Builder(list(spans), tz).build()


class _Builder:
    def __init__(self, spans: list[TrailSpan], tz: tzinfo) -> None:
        self.tz = tz
        self.spans = sorted(spans, key=lambda span: (span.start_ns, span.end_ns))
        self.actions = [span for span in self.spans if ATTR_UI_ACTION in span.attributes]
        self.fetches = [span for span in self.spans if span.kind == KIND_CLIENT and _url(span)]
        self.polls = [span for span in self.fetches if ATTR_JOB_STATE in span.attributes]
        self.servers = [span for span in self.spans if span.kind == KIND_SERVER]
        self.sends = [
            span
            for span in self.spans
            if span.kind == KIND_PRODUCER and span.attributes.get(ATTR_MESSAGING_OPERATION_TYPE) == OPERATION_SEND
        ]
        attempts = [
            span
            for span in self.spans
            if span.kind == KIND_CONSUMER and span.attributes.get(ATTR_MESSAGING_OPERATION_TYPE) == OPERATION_PROCESS
        ]
        self.attempts_by_job: dict[str, list[TrailSpan]] = defaultdict(list)
        for attempt in attempts:
            self.attempts_by_job[_job_id(attempt)].append(attempt)
        for job_attempts in self.attempts_by_job.values():
            job_attempts.sort(key=lambda span: (_int(span.attributes.get(ATTR_JOB_ATTEMPT)), span.start_ns))
        attempt_ids = {attempt.span_id for attempt in attempts}
        self.steps: dict[str, list[TrailSpan]] = defaultdict(list)
        for span in self.spans:
            if span.parent_span_id in attempt_ids:
                self.steps[span.parent_span_id].append(span)
        # Status polls reach the API too; they are summarised, not told one by one.
        self.api_calls = [span for span in self.servers if not self._is_poll(span)]
        self.entries: list[Entry] = []

    def build(self) -> Timeline:
        self._tell_actions()
        self._tell_fetch_failures()
        self._tell_api_calls()
        self._tell_polls()
        finals = [self._tell_job(send) for send in self.sends]
        sent_job_ids = {_job_id(send) for send in self.sends}
        finals.extend(self._tell_attempts(job_id) for job_id in self.attempts_by_job if job_id not in sent_job_ids)
        self.entries.sort(key=lambda entry: entry.at_ns)
        final_state = _worst(finals) if finals else FINAL_NO_JOB
        self._append(self.spans[-1].end_ns if self.spans else 0, "final", f"final: {final_state}")
        return Timeline(
            entries=self.entries,
            first_broken_step=self._first_broken_step(),
            final_state=final_state,
            request_ids=_distinct(span.attributes.get(ATTR_REQUEST_ID) for span in self.spans),
            trace_ids=_distinct(span.trace_id for span in self.spans),
            job_ids=_distinct(
                [send.attributes.get(ATTR_MESSAGING_MESSAGE_ID) for send in self.sends] + list(self.attempts_by_job)
            ),
        )

    # --- the lines ----------------------------------------------------------------------------------
    def _tell_actions(self) -> None:
        for action in self.actions:
            screen = action.attributes.get(ATTR_UI_SCREEN)
            where = f' on screen "{screen}"' if screen else ""
            label = action.attributes.get(ATTR_UI_ACTION) or action.name
            self._append(action.start_ns, "action", f'action "{label}" clicked at {self._time(action.start_ns)}{where}')
            for event in action.events:
                if event.name == EVENT_UI_RESULT:
                    message = event.attributes.get(ATTR_UI_RESULT_MESSAGE, "")
                    state = event.attributes.get(ATTR_UI_RESULT_STATE, "")
                    shown = f'the page showed "{message}" at {self._time(event.time_ns)} ({state})'
                    self._append(event.time_ns, "ui_result", shown)

    def _tell_fetch_failures(self) -> None:
        for fetch in self.fetches:
            if fetch.status_error and not self._reached_api(fetch):
                why = fetch.status_message or _error(fetch, "no answer")
                self._append(
                    fetch.start_ns,
                    "fetch_failed",
                    f"the page's request {_method(fetch)} {_url(fetch)} failed at {self._time(fetch.start_ns)}: {why}",
                )

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
            self._append(call.start_ns, "api", text)

    def _tell_polls(self) -> None:
        polls = self.polls or [server for server in self.servers if self._is_poll(server)]
        if not polls:
            return
        last = polls[-1]
        state = last.attributes.get(ATTR_JOB_STATE)
        saw = f'; it last saw "{state}" at {self._time(last.end_ns)}' if state else ""
        times = "once" if len(polls) == 1 else f"{len(polls)} times"
        self._append(last.end_ns, "polls", f"the page checked the job's status {times}{saw}")

    def _tell_job(self, send: TrailSpan) -> str:
        job_id = _job_id(send)
        queue = send.attributes.get(ATTR_MESSAGING_DESTINATION_NAME, "")
        at = self._time(send.start_ns)
        if send.status_error:
            why = _error(send)
            self._append(send.start_ns, "queue_failed", f'queuing the job on "{queue}" failed at {at}: {why}')
            return FINAL_NO_JOB
        scheduled = send.attributes.get(ATTR_JOB_SCHEDULED_FOR)
        later = f", to run at {scheduled}" if scheduled else ""
        self._append(send.start_ns, "queued", f'job {job_id} queued at {at} on queue "{queue}"{later}')
        return self._tell_attempts(job_id)

    def _tell_attempts(self, job_id: str) -> str:
        attempts = self.attempts_by_job.get(job_id, [])
        if not attempts:
            return FINAL_NOT_PICKED_UP
        for attempt in attempts:
            self._tell_attempt(attempt)
        last = attempts[-1]
        outcome = last.attributes.get(ATTR_JOB_OUTCOME)
        final = _OUTCOME_FINAL.get(str(outcome), FINAL_STOPPED)
        steps = self.steps.get(last.span_id, [])
        failed_steps = sum(1 for step in steps if step.status_error)
        if final == FINAL_SUCCEEDED and failed_steps:
            final = FINAL_PARTLY_DONE
        count = "1 attempt" if len(attempts) == 1 else f"{len(attempts)} attempts"
        text = f"job {job_id} {final} at {self._time(last.end_ns)} after {count}"
        if final == FINAL_PARTLY_DONE:
            text += f" ({failed_steps} of {len(steps)} steps failed)"
        failed = last.event(EVENT_JOB_FAILED)
        if failed is not None:
            text += f" (first error: {_first_error(failed)}; last error: {_error(last, 'unknown')})"
        self._append(last.end_ns, "job_final", text)
        return final

    def _tell_attempt(self, attempt: TrailSpan) -> None:
        number = attempt.attributes.get(ATTR_JOB_ATTEMPT, "?")
        text = f"attempt {number} picked up at {self._time(attempt.start_ns)}"
        wait_ms = attempt.attributes.get(ATTR_JOB_QUEUE_WAIT_MS)
        if isinstance(wait_ms, (int, float)):
            text += f" after {wait_ms / 1000:.1f} s in queue"
        outcome = attempt.attributes.get(ATTR_JOB_OUTCOME)
        if outcome == OUTCOME_SUCCEEDED:
            text += f", succeeded in {_seconds(attempt)}"
        elif outcome in (OUTCOME_RETRY_SCHEDULED, OUTCOME_FAILED):
            text += f", failed: {_error(attempt)}"
            retry = attempt.event(EVENT_RETRY_SCHEDULED)
            if outcome == OUTCOME_RETRY_SCHEDULED and retry is not None:
                delay = retry.attributes.get(ATTR_RETRY_DELAY_S)
                next_run = retry.attributes.get(ATTR_RETRY_NEXT_RUN_AT)
                text += f"; retry scheduled in {_number(delay)} s" if delay is not None else "; retry scheduled"
                text += f" (at {self._clock(next_run)})" if next_run else ""
            elif outcome == OUTCOME_FAILED:
                text += "; no retries left"
        elif outcome == OUTCOME_STOPPED:
            text += ", stopped before it finished"
        elif outcome == OUTCOME_ABANDONED:
            text += ", abandoned (the worker died during the job)"
        self._append(attempt.start_ns, "attempt", text)
        for step in self.steps.get(attempt.span_id, []):
            outcome_text = f"failed: {_error(step)}" if step.status_error else f"done in {_seconds(step)}"
            self._append(step.start_ns, "step", f'step "{step.name}" {outcome_text}', depth=1)

    # --- the verdict ----------------------------------------------------------------------------------
    def _first_broken_step(self) -> BrokenStep:
        if self.actions and not self.api_calls and not self.sends:
            failure = next((fetch for fetch in self.fetches if fetch.status_error), None)
            detail = "the action started but no request reached the API"
            if failure is not None:
                detail = f"the browser's request failed ({failure.status_message or 'no answer'})"
            return BrokenStep(STEP_UI_NEVER_SENT, detail)
        queued = [send for send in self.sends if not send.status_error]
        failed_send = next((send for send in self.sends if send.status_error), None)
        if not queued and failed_send is not None:
            return BrokenStep(STEP_NEVER_QUEUED, f"queuing failed: {_error(failed_send)}")
        rejected = next((call for call in self.api_calls if _status(call) >= 400), None)
        if rejected is not None:
            reason = rejected.attributes.get(ATTR_ERROR_REASON)
            return BrokenStep(STEP_API_REJECTED, f"{_status(rejected)} {reason}" if reason else str(_status(rejected)))
        if not queued and not self.attempts_by_job:
            if any(_status(call) == HTTP_ACCEPTED for call in self.api_calls):
                return BrokenStep(STEP_NEVER_QUEUED, "the API accepted the request but no job was put on a queue")
            return BrokenStep(STEP_NOTHING_BROKEN, "no background job belongs to this action")
        retried: list[str] = []
        for job_id in [_job_id(send) for send in queued] or list(self.attempts_by_job):
            attempts = self.attempts_by_job.get(job_id, [])
            if not attempts:
                return BrokenStep(STEP_JOB_NOT_FINISHED, f"job {job_id} was never picked up by a worker")
            last = attempts[-1]
            if last.attributes.get(ATTR_JOB_OUTCOME) != OUTCOME_SUCCEEDED:
                return BrokenStep(STEP_JOB_NOT_FINISHED, self._unfinished_detail(job_id, last))
            failed_step = next((step for step in self.steps.get(last.span_id, []) if step.status_error), None)
            if failed_step is not None:
                return BrokenStep(STEP_JOB_PARTIAL, f'step "{failed_step.name}" failed: {_error(failed_step)}')
            if len(attempts) > 1:
                first_error = _error(attempts[0], "an error")
                retried.append(
                    f"job {job_id} succeeded on attempt {len(attempts)} after {len(attempts) - 1} failed "
                    f"(first: {first_error})"
                )
        return BrokenStep(STEP_NOTHING_BROKEN, "; ".join(retried))

    def _unfinished_detail(self, job_id: str, last: TrailSpan) -> str:
        outcome = last.attributes.get(ATTR_JOB_OUTCOME)
        number = last.attributes.get(ATTR_JOB_ATTEMPT, "?")
        if outcome == OUTCOME_RETRY_SCHEDULED:
            retry = last.event(EVENT_RETRY_SCHEDULED)
            when = retry.attributes.get(ATTR_RETRY_NEXT_RUN_AT) if retry else None
            return f"job {job_id} is waiting to retry" + (f" at {self._clock(when)}" if when else "")
        failed = last.event(EVENT_JOB_FAILED)
        if outcome == OUTCOME_FAILED and failed is not None:
            return f"job {job_id} dead-lettered after attempt {number}; first error {_first_error(failed)}"
        return f"job {job_id} attempt {number} ended {outcome or 'without an outcome'}"

    # --- helpers ----------------------------------------------------------------------------------------
    def _is_poll(self, server: TrailSpan) -> bool:
        """A GET answered 2xx/3xx from which nothing was queued: the page asking how the job is doing."""
        method = str(server.attribute(HTTP_REQUEST_METHOD, HTTP_METHOD) or "").upper()
        status = _status(server)
        queued_here = any(send.parent_span_id == server.span_id for send in self.sends)
        return method == "GET" and status < 400 and not queued_here

    def _reached_api(self, fetch: TrailSpan) -> bool:
        return any(server.parent_span_id == fetch.span_id for server in self.servers)

    def _append(self, at_ns: int, kind: str, text: str, depth: int = 0) -> None:
        self.entries.append(Entry(at_ns, kind, text, depth))

    def _time(self, ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, self.tz).strftime("%H:%M:%S")

    def _clock(self, iso: Any) -> str:
        """An ISO 8601 time from an attribute, told like every other time of the trail (as given if unreadable)."""
        try:
            moment = datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
        except ValueError:
            return str(iso)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(self.tz).strftime("%H:%M:%S")


def _worst(finals: Sequence[str]) -> str:
    """With several jobs in one action, the trail's final state is the least finished one."""
    order = (
        FINAL_NO_JOB,
        FINAL_NOT_PICKED_UP,
        FINAL_STOPPED,
        FINAL_DEAD_LETTERED,
        FINAL_RETRY_PENDING,
        FINAL_PARTLY_DONE,
    )
    return next((state for state in order if state in finals), FINAL_SUCCEEDED)


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


def _distinct(values: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(str(value) for value in values if value))


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat().replace("+00:00", "Z")

"""RQ's decision about a failed attempt, read in one place for the attempt span and the job contract.

It lives with the RQ instrumentation (the lower layer): ``jobtrail.jobs`` imports it, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from rq.job import Job


@dataclass(frozen=True)
class RetryDecision:
    """RQ's decision about a failed attempt: run again after ``delay_s`` seconds, or not at all."""

    delay_s: float
    retries_left: int

    @property
    def next_run_at(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=self.delay_s)


def retry_decision(job: Job) -> RetryDecision | None:
    """What RQ's worker does with a job whose attempt raised, read from RQ's own ``Job`` the way the worker reads it.

    ``Worker.handle_job_failure`` retries when ``job.should_retry`` and waits ``job.get_retry_interval()``;
    the failure callbacks run just before it, on the same ``Job`` object. This is the one place jobtrail reads
    that decision.
    """
    if not job.should_retry:
        return None
    return RetryDecision(float(job.get_retry_interval()), max((job.retries_left or 1) - 1, 0))

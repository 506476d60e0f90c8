"""The durable job contract, framework-free: what an API and a worker both need to tell a job's story honestly.

- :class:`Contract` (API side): accept a job (202 + status URL, idempotency per actor and operation), answer
  its status, its result and a cancel; only for its own jobs and, when set, their own actor.
- :func:`current_run` (worker side, inside a job function): items with checkpoints, stage, progress and safe
  points for cancelling; the job's outcome follows from its items.
- ``jobtrail jobs requeue <job id> [--failed-items-only]`` (operator side): a new run of a failed or partially
  succeeded job; attempt numbers continue.

Everything lives in the Redis RQ already uses (:mod:`jobtrail.jobs.record`). See docs/jobs.md.
"""

from __future__ import annotations

from jobtrail.jobs.contract import Answer, Caller, Contract, Refusal, Reply
from jobtrail.jobs.run import ItemRun, ItemsFailed, JobCancelled, JobRun, current_run

__all__ = [
    "Answer",
    "Caller",
    "Contract",
    "ItemRun",
    "ItemsFailed",
    "JobCancelled",
    "JobRun",
    "Refusal",
    "Reply",
    "current_run",
]

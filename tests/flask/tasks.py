"""Job functions the tests enqueue (importable by RQ workers as ``tests.flask.tasks``)."""

from __future__ import annotations

import redis
from jobtrail.jobs import current_run
from rq import get_current_job

RUNS_KEY = "tests:runs:{name}"
GATE_KEY = "tests:gate:{job_id}"


class MailboxFull(Exception):
    """A failure with a message the status endpoint must not leak."""


class BadRow(ValueError):
    """Bad data in one item: retrying cannot help."""


def send_receipt(order_id: str) -> str:
    return f"receipt for {order_id}"


def fail_with_secret(order_id: str) -> None:
    raise MailboxFull(f"mailbox of customer {order_id} is full")


def _count(connection: redis.Redis, name: str) -> int:
    return int(connection.incr(RUNS_KEY.format(name=name)))


def key_error_then_value_errors() -> None:
    """First attempt KeyError, every later one ValueError (first and last error differ)."""
    job = get_current_job()
    if _count(job.connection, f"errors:{job.id}") == 1:
        raise KeyError("order")
    raise ValueError("amount is not a number")


def import_items(rows: dict[str, str]) -> dict[str, int]:
    """One item per row: ``ok`` succeeds, ``bad`` fails for good, ``flaky`` fails on its first try only."""
    job = get_current_job()
    run = current_run()
    run.set_stage("importing")
    for item in run.items(rows, permanent=(BadRow,)):
        with item:
            _count(job.connection, f"item:{job.id}:{item.id}")
            kind = rows[item.id]
            if kind == "bad":
                raise BadRow(f"{item.id}: amount 'twelve' is not a number")
            if kind == "flaky" and item.attempts == 1:
                raise ConnectionError(f"{item.id}: upstream timed out")
            item.save_checkpoint({"rows": 1})
    return {"succeeded": run.count("succeeded")}


def gated_items(names: list[str]) -> None:
    """Each item after the first waits for the test to open the gate: a job that is surely running when cancelled."""
    job = get_current_job()
    run = current_run()
    for index, item in enumerate(run.items(names)):
        with item:
            _count(job.connection, f"item:{job.id}:{item.id}")
            if index == 0:
                job.connection.blpop([GATE_KEY.format(job_id=job.id)], timeout=30)


def checked_send(order_id: str) -> str:
    """A job without items that calls the explicit safe point before its side effect."""
    job = get_current_job()
    current_run().check()
    _count(job.connection, f"sent:{job.id}")
    return f"sent {order_id}"


def items_run_count(connection: redis.Redis, job_id: str, item_id: str) -> int:
    return int(connection.get(RUNS_KEY.format(name=f"item:{job_id}:{item_id}")) or 0)


def sent_count(connection: redis.Redis, job_id: str) -> int:
    return int(connection.get(RUNS_KEY.format(name=f"sent:{job_id}")) or 0)

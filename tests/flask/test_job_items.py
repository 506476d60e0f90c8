"""Items for job functions: the outcome follows from the items, a retry re-runs only what is left; stage, progress."""

from __future__ import annotations

import time

import jobtrail.jobs.contract as contract
import pytest
from jobtrail.conventions import (
    EVENT_ITEM_FAILED_RETRYABLE,
    EVENT_ITEM_FAILED_TERMINAL,
    EVENT_ITEM_STARTED,
    EVENT_ITEM_SUCCEEDED,
    EVENT_JOB_CREATED,
    EVENT_JOB_PARTIALLY_SUCCEEDED,
    EVENT_JOB_RETRY_SCHEDULED,
    EVENT_JOB_STARTED,
    EVENT_JOB_SUCCEEDED,
    STATE_FAILED,
    STATE_PARTIALLY_SUCCEEDED,
    STATE_SUCCEEDED,
)

from tests.flask import worker_process
from tests.flask.tasks import items_run_count


def run_import(client, run_jobs, rows, retries=0):
    accepted = client.post(f"/import?retries={retries}", json={"rows": rows}).get_json()
    run_jobs()
    return accepted, client.get(accepted["status_url"]).get_json()


def test_one_bad_item_makes_the_job_partially_succeeded_not_succeeded(client, run_jobs):
    _accepted, body = run_import(client, run_jobs, {"a.csv": "ok", "b.csv": "bad", "c.csv": "ok"})

    assert (body["state"], body["terminal"], body["attempt"]) == (STATE_PARTIALLY_SUCCEEDED, True, 1)
    assert body["items"] == [
        {"id": "a.csv", "state": "succeeded", "attempts": 1, "error": None},
        {
            "id": "b.csv",
            "state": "failed",
            "attempts": 1,
            "error": {"type": "BadRow", "message": "b.csv: amount 'twelve' is not a number"},
        },
        {"id": "c.csv", "state": "succeeded", "attempts": 1, "error": None},
    ]
    assert [(event["event"], event.get("item")) for event in body["events"]] == [
        (EVENT_JOB_CREATED, None),
        (EVENT_JOB_STARTED, None),
        (EVENT_ITEM_STARTED, "a.csv"),
        (EVENT_ITEM_SUCCEEDED, "a.csv"),
        (EVENT_ITEM_STARTED, "b.csv"),
        (EVENT_ITEM_FAILED_TERMINAL, "b.csv"),
        (EVENT_ITEM_STARTED, "c.csv"),
        (EVENT_ITEM_SUCCEEDED, "c.csv"),
        (EVENT_JOB_PARTIALLY_SUCCEEDED, None),
    ]
    assert body["events"][-1]["detail"] == "2 of 3 items succeeded"
    assert body["first_error"]["type"] == body["last_error"]["type"] == "BadRow"
    assert (body["stage"], body["progress"]) == ("importing", {"done": 2, "total": 3})


def test_all_items_failing_fails_the_job_and_all_succeeding_succeeds_it(client, run_jobs):
    _accepted, failed = run_import(client, run_jobs, {"a.csv": "bad", "b.csv": "bad"})
    _accepted, succeeded = run_import(client, run_jobs, {"a.csv": "ok"})

    assert failed["state"] == STATE_FAILED and [item["state"] for item in failed["items"]] == ["failed", "failed"]
    assert succeeded["state"] == STATE_SUCCEEDED and succeeded["progress"] == {"done": 1, "total": 1}


def test_a_retry_re_runs_only_the_items_not_yet_succeeded(client, run_jobs, redis_conn):
    accepted, body = run_import(client, run_jobs, {"a.csv": "ok", "b.csv": "flaky", "c.csv": "bad"}, retries=2)

    assert (body["state"], body["attempt"]) == (STATE_PARTIALLY_SUCCEEDED, 2)
    runs = {
        item_id: items_run_count(redis_conn, accepted["job_id"], item_id) for item_id in ("a.csv", "b.csv", "c.csv")
    }
    assert runs == {"a.csv": 1, "b.csv": 2, "c.csv": 1}
    assert [(item["id"], item["state"], item["attempts"]) for item in body["items"]] == [
        ("a.csv", "succeeded", 1),
        ("b.csv", "succeeded", 2),
        ("c.csv", "failed", 1),
    ]
    names = [event["event"] for event in body["events"]]
    assert names.count(EVENT_ITEM_FAILED_RETRYABLE) == 1 and names.count(EVENT_JOB_RETRY_SCHEDULED) == 1
    assert body["events"][names.index(EVENT_JOB_RETRY_SCHEDULED)]["detail"].startswith("ItemsFailed; next run at ")
    assert body["first_error"]["type"] == "ConnectionError" and body["last_error"]["type"] == "ItemsFailed"


def test_items_failing_retryably_on_the_last_attempt_end_failed_for_good(client, run_jobs):
    _accepted, body = run_import(client, run_jobs, {"a.csv": "ok", "b.csv": "flaky"}, retries=0)

    assert body["state"] == STATE_PARTIALLY_SUCCEEDED
    assert [item["state"] for item in body["items"]] == ["succeeded", "failed"]
    assert body["events"][-1]["event"] == EVENT_JOB_PARTIALLY_SUCCEEDED


def test_result_of_a_partially_succeeded_job_is_readable(client, run_jobs):
    accepted, _body = run_import(client, run_jobs, {"a.csv": "ok", "b.csv": "bad"})
    result = client.get(f"{accepted['status_url']}/result").get_json()
    assert result == {"job_id": accepted["job_id"], "state": STATE_PARTIALLY_SUCCEEDED, "result": {"succeeded": 1}}


def test_job_succeeded_event_follows_its_items(client, run_jobs):
    _accepted, body = run_import(client, run_jobs, {"a.csv": "ok", "b.csv": "ok"})
    assert [event["event"] for event in body["events"]][-1] == EVENT_JOB_SUCCEEDED


@pytest.mark.slow
def test_fast_polling_during_a_retried_job_on_a_forking_worker_changes_nothing(client, redis_conn, redis_url):
    """The issue's race: reads between the worker's writes must neither invent nor lose an event."""
    accepted = client.post("/import?retries=1", json={"rows": {"a.csv": "ok", "b.csv": "flaky"}}).get_json()
    worker = worker_process.start(redis_url, "receipts")
    seen_states = []
    try:
        deadline = time.monotonic() + 30
        while worker.poll() is None:
            assert time.monotonic() < deadline, "the worker did not finish"
            seen_states.append(client.get(accepted["status_url"]).get_json()["state"])
        assert worker.returncode == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    body = client.get(accepted["status_url"]).get_json()
    assert (body["state"], body["attempt"]) == (STATE_SUCCEEDED, 2)
    job_events = [e["event"] for e in body["events"] if not e["event"].startswith("item_")]
    assert job_events == [
        EVENT_JOB_CREATED,
        EVENT_JOB_STARTED,
        EVENT_JOB_RETRY_SCHEDULED,
        EVENT_JOB_STARTED,
        EVENT_JOB_SUCCEEDED,
    ]
    assert len(seen_states) > 1
    assert [e["attempt"] for e in body["events"] if e["event"] == EVENT_JOB_STARTED] == [1, 2]


def test_a_job_that_finishes_while_its_status_is_read_is_not_shown_succeeded(client, run_jobs, monkeypatch):
    """The status reads RQ, then the record: RQ files a job as finished only after the worker wrote its outcome."""
    accepted = client.post("/import", json={"rows": {"a.csv": "ok", "b.csv": "bad"}}).get_json()
    real_fetch = contract.fetch
    ran = []

    def fetch_after_the_job_ran(*args, **kwargs):
        if not ran:  # the job runs to its end right inside this status request, between its two reads
            ran.append(True)
            run_jobs()
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(contract, "fetch", fetch_after_the_job_ran)
    body = client.get(accepted["status_url"]).get_json()

    assert ran
    assert (body["state"], body["attempt"]) == (STATE_PARTIALLY_SUCCEEDED, 1)
    assert body["events"][-1]["event"] == EVENT_JOB_PARTIALLY_SUCCEEDED

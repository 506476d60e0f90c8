"""Cancelling (CONVENTIONS.md "Cancelling"): queued jobs never run, running ones stop at a safe point, one winner."""

from __future__ import annotations

import threading
import time

import pytest
from jobtrail.conventions import (
    EVENT_ITEM_SUCCEEDED,
    EVENT_JOB_CANCEL_REQUESTED,
    EVENT_JOB_CANCELLED,
    EVENT_JOB_CREATED,
    EVENT_JOB_STARTED,
    EVENT_JOB_SUCCEEDED,
    STATE_CANCELLED,
    STATE_QUEUED,
    STATE_STARTED,
    STATE_SUCCEEDED,
)
from jobtrail.jobs.record import Event, JobRecord, Snapshot, now
from jobtrail.jobs.rqview import RQView
from jobtrail.jobs.status import status_body

from tests.flask import worker_process
from tests.flask.sample_app import ACTOR_HEADER
from tests.flask.tasks import GATE_KEY, items_run_count, sent_count

WAIT_S = 30


def events(body) -> list[str]:
    return [event["event"] for event in body["events"]]


def wait_for(client, url, predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while True:
        body = client.get(url).get_json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, f"{what}: {body}"
        time.sleep(0.05)


def test_a_queued_job_cancelled_never_runs(client, run_jobs, redis_conn):
    accepted = client.post("/checked").get_json()

    response = client.post(f"{accepted['status_url']}/cancel")

    assert response.status_code == 202
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert (body["state"], body["terminal"]) == (STATE_CANCELLED, True)
    assert events(body) == [EVENT_JOB_CREATED, EVENT_JOB_CANCEL_REQUESTED, EVENT_JOB_CANCELLED]
    run_jobs()
    assert sent_count(redis_conn, accepted["job_id"]) == 0
    assert client.get(accepted["status_url"]).get_json() == body


def test_a_job_waiting_for_its_retry_cancelled_never_runs_again(client, run_jobs, queue):
    accepted = client.post("/failing-receipts?retries=2&interval=600").get_json()
    run_jobs()
    assert client.get(accepted["status_url"]).get_json()["state"] == "scheduled"

    body = client.post(f"{accepted['status_url']}/cancel").get_json()

    assert (body["state"], body["attempt"], body["next_run_at"]) == (STATE_CANCELLED, 1, None)
    assert body["events"][-1] == {**body["events"][-1], "event": EVENT_JOB_CANCELLED, "detail": "before it ran again"}
    assert accepted["job_id"] not in queue.scheduled_job_registry.get_job_ids()
    assert queue.fetch_job(accepted["job_id"]).get_status() == "canceled"


def test_a_queued_job_with_items_cancelled_marks_its_pending_items_cancelled(client, run_jobs, redis_conn):
    accepted = client.post("/import", json={"rows": {"a.csv": "ok", "b.csv": "ok"}}).get_json()
    queued = client.get(accepted["status_url"]).get_json()
    assert [(item["id"], item["state"]) for item in queued["items"]] == [("a.csv", "pending"), ("b.csv", "pending")]

    client.post(f"{accepted['status_url']}/cancel")
    run_jobs()

    body = client.get(accepted["status_url"]).get_json()
    assert body["state"] == STATE_CANCELLED
    assert [(item["id"], item["state"], item["attempts"]) for item in body["items"]] == [
        ("a.csv", "cancelled", 0),
        ("b.csv", "cancelled", 0),
    ]
    assert items_run_count(redis_conn, accepted["job_id"], "a.csv") == 0


def test_the_worker_that_got_a_job_just_cancelled_stops_at_its_first_safe_point(client, run_jobs, redis_conn, queue):
    """The race: the cancel lands while the worker already holds the job; the job's safe point stops it."""
    accepted = client.post("/checked").get_json()
    JobRecord(redis_conn, accepted["job_id"]).append(
        Event(EVENT_JOB_CANCELLED, now()), terminal=STATE_CANCELLED
    )  # as if the API cancelled between the worker's dequeue and the job's start
    run_jobs()
    body = client.get(accepted["status_url"]).get_json()
    assert sent_count(redis_conn, accepted["job_id"]) == 0
    assert body["state"] == STATE_CANCELLED and body["attempt"] == 1, "it started, then stopped at once"
    assert queue.failed_job_registry.count == 1 and queue.count == 0, "RQ did not retry it"


@pytest.mark.slow
def test_a_running_job_stops_at_its_next_safe_point_on_a_real_forking_worker(client, redis_conn, redis_url):
    accepted = client.post("/gated", json={"names": ["one", "two", "three"]}).get_json()
    url = accepted["status_url"]
    worker = worker_process.start(redis_url, "receipts")
    try:
        running = wait_for(client, url, lambda body: body["state"] == STATE_STARTED and body["items"], "never started")
        [shown_start] = [event for event in running["events"] if event["event"] == EVENT_JOB_STARTED]

        response = client.post(f"{url}/cancel")
        assert response.status_code == 202
        assert response.get_json()["state"] == STATE_STARTED, "running: it stops at its next safe point"
        assert EVENT_JOB_CANCEL_REQUESTED in events(response.get_json())
        redis_conn.rpush(GATE_KEY.format(job_id=accepted["job_id"]), "go")
        assert worker.wait(WAIT_S) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    body = client.get(url).get_json()
    assert (body["state"], body["attempt"]) == (STATE_CANCELLED, 1), "a Retry(max=2) job is not retried once cancelled"
    assert [event for event in body["events"] if event["event"] == EVENT_JOB_STARTED] == [shown_start], (
        "the start shown while it ran is the one the worker recorded"
    )
    assert [(item["id"], item["state"]) for item in body["items"]] == [
        ("one", "succeeded"),
        ("two", "cancelled"),
        ("three", "cancelled"),
    ]
    assert items_run_count(redis_conn, accepted["job_id"], "two") == 0
    names = events(body)
    assert (
        names.index(EVENT_JOB_CANCEL_REQUESTED) < names.index(EVENT_ITEM_SUCCEEDED) < names.index(EVENT_JOB_CANCELLED)
    )
    assert names[-1] == EVENT_JOB_CANCELLED and EVENT_JOB_SUCCEEDED not in names
    assert client.post(f"{url}/cancel").status_code == 409


def test_cancelling_a_finished_job_is_409_already_terminal(client, run_jobs):
    accepted = client.post("/receipts", json={"order_id": "1042"}).get_json()
    run_jobs()

    response = client.post(f"{accepted['status_url']}/cancel")

    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["reason"] == "already_terminal" and error["detail"] == "the job already ended: succeeded"
    assert client.get(accepted["status_url"]).get_json()["state"] == STATE_SUCCEEDED


def test_cancel_of_an_unknown_or_foreign_job_is_404(client, queue):
    alice = client.post("/receipts", json={"order_id": "1"}, headers={ACTOR_HEADER: "u_alice"}).get_json()
    other = client.post("/other-receipts").get_json()
    stray = queue.enqueue("tests.flask.tasks.send_receipt", "9")

    for job_id, headers in [
        ("no-such-job", {}),
        (other["job_id"], {}),
        (stray.id, {}),
        (alice["job_id"], {ACTOR_HEADER: "u_bob"}),
    ]:
        response = client.post(f"/jobs/{job_id}/cancel", headers=headers)
        assert response.status_code == 404 and response.get_json()["error"]["reason"] == "not_found"
    assert client.get(alice["status_url"], headers={ACTOR_HEADER: "u_alice"}).get_json()["state"] == STATE_QUEUED


def test_cancel_and_completion_racing_have_exactly_one_winner(client, redis_conn):
    accepted = client.post("/receipts", json={"order_id": "1042"}).get_json()
    record = JobRecord(redis_conn, accepted["job_id"])
    start = threading.Barrier(8)
    won: list[str] = []

    def end(event: str, state: str) -> None:
        start.wait()
        if record.append(Event(event, now()), terminal=state):
            won.append(state)

    racers = [
        threading.Thread(target=end, args=pair)
        for pair in [(EVENT_JOB_CANCELLED, STATE_CANCELLED), (EVENT_JOB_SUCCEEDED, STATE_SUCCEEDED)] * 4
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    body = client.get(accepted["status_url"]).get_json()
    assert len(won) == 1 and body["state"] == won[0]
    terminal_events = [name for name in events(body) if name in (EVENT_JOB_CANCELLED, EVENT_JOB_SUCCEEDED)]
    assert len(terminal_events) == 1


def test_a_job_that_completes_before_its_safe_point_wins_over_the_cancel(client, run_jobs, redis_conn):
    accepted = client.post("/receipts", json={"order_id": "1042"}).get_json()
    record = JobRecord(redis_conn, accepted["job_id"])
    record.append(Event(EVENT_JOB_CANCEL_REQUESTED, now()), fields={"cancel_requested": "1"})  # asked while running
    run_jobs()  # send_receipt has no safe point: it completes

    body = client.get(accepted["status_url"]).get_json()
    assert body["state"] == STATE_SUCCEEDED
    assert events(body) == [EVENT_JOB_CREATED, EVENT_JOB_CANCEL_REQUESTED, EVENT_JOB_STARTED, EVENT_JOB_SUCCEEDED]


def test_a_job_cancelled_at_its_safe_point_counts_its_attempt_before_the_worker_files_it():
    """Between the safe point's ``job_cancelled`` and the end of the attempt, RQ still says started."""
    started_at = now()
    snapshot = Snapshot(
        "j1",
        {"terminal": STATE_CANCELLED, "run": "1"},
        [Event(EVENT_JOB_CREATED, started_at), Event(EVENT_JOB_CANCELLED, now(), attempt=1)],
        [],
    )

    body = status_body(snapshot, RQView(STATE_STARTED, started_at, None), "/jobs/j1", now())

    assert (body["state"], body["attempt"]) == (STATE_CANCELLED, 1)
    assert [event["event"] for event in body["events"]] == [EVENT_JOB_CREATED, EVENT_JOB_STARTED, EVENT_JOB_CANCELLED]

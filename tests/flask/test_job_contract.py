"""The async job contract over the Flask test client and real Redis: 202, status, events, errors, expiry, faults."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import redis
from jobtrail.conventions import (
    ATTR_ERROR_REASON,
    EVENT_JOB_CREATED,
    EVENT_JOB_EXPIRED,
    EVENT_JOB_FAILED_FINAL,
    EVENT_JOB_RETRY_SCHEDULED,
    EVENT_JOB_STARTED,
    EVENT_JOB_SUCCEEDED,
    JOB_STATE_HEADER,
    REQUEST_ID_HEADER,
    STATE_EXPIRED,
    STATE_FAILED,
    STATE_NOT_FOUND,
    STATE_QUEUED,
    STATE_SCHEDULED,
    STATE_SUCCEEDED,
)
from jobtrail.jobs.idempotency import Claim, IdempotencyStore, Scope, fingerprint
from jobtrail.jobs.record import KEY_PREFIX, record_key
from opentelemetry.trace import SpanKind
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

from tests.flask.conftest import QUEUE_NAME
from tests.flask.sample_app import ACTOR_HEADER, create_app

GIVEN_ID = "req_1111222233334444"
STATUS_FIELDS = {
    "job_id",
    "request_id",
    "state",
    "terminal",
    "status_url",
    "stage",
    "progress",
    "attempt",
    "next_run_at",
    "first_error",
    "last_error",
    "items",
    "events",
}


def post_receipt(client, order_id="1042", **headers):
    return client.post("/receipts", json={"order_id": order_id}, headers=headers)


def events(status_body) -> list[str]:
    return [event["event"] for event in status_body["events"]]


def moments(status_body) -> list[datetime]:
    return [datetime.fromisoformat(event["at"]) for event in status_body["events"] if event["at"]]


def redis_state(connection: redis.Redis) -> dict[bytes, bytes]:
    """Every key with its serialized value and TTL presence: equal before and after means nothing was written."""
    return {key: (connection.dump(key), connection.ttl(key) > 0) for key in sorted(connection.keys())}


def test_accepted_answer_body_and_headers(client, queue):
    response = post_receipt(client, **{REQUEST_ID_HEADER: GIVEN_ID})

    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"job_id", "request_id", "status", "status_url"}
    assert body["request_id"] == GIVEN_ID == response.headers[REQUEST_ID_HEADER]
    assert body["status"] == STATE_QUEUED
    assert body["status_url"] == f"/jobs/{body['job_id']}" == response.headers["Location"]
    assert queue.job_ids == [body["job_id"]]


def test_status_of_a_queued_job_has_every_field_of_the_conventions(client):
    accepted = post_receipt(client, **{REQUEST_ID_HEADER: GIVEN_ID}).get_json()

    response = client.get(accepted["status_url"])

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers[JOB_STATE_HEADER] == STATE_QUEUED
    body = response.get_json()
    assert set(body) == STATUS_FIELDS
    assert (body["job_id"], body["request_id"], body["status_url"]) == (
        accepted["job_id"],
        GIVEN_ID,
        accepted["status_url"],
    )
    assert (body["state"], body["terminal"], body["attempt"]) == (STATE_QUEUED, False, 0)
    assert body["stage"] is body["progress"] is body["next_run_at"] is body["first_error"] is body["last_error"] is None
    assert body["items"] == []
    assert events(body) == [EVENT_JOB_CREATED]


def test_status_after_success_lists_every_event_in_order(client, run_jobs):
    accepted = post_receipt(client).get_json()
    run_jobs()

    body = client.get(accepted["status_url"]).get_json()

    assert (body["state"], body["terminal"], body["attempt"], body["last_error"]) == (STATE_SUCCEEDED, True, 1, None)
    assert events(body) == [EVENT_JOB_CREATED, EVENT_JOB_STARTED, EVENT_JOB_SUCCEEDED]
    assert [event.get("attempt") for event in body["events"]] == [None, 1, 1]
    assert moments(body) == sorted(moments(body))


def test_first_and_last_error_differ_and_every_attempt_is_one_event(client, run_jobs):
    accepted = client.post("/errors").get_json()
    run_jobs()

    body = client.get(accepted["status_url"]).get_json()

    assert (body["state"], body["attempt"]) == (STATE_FAILED, 3)
    assert events(body) == [
        EVENT_JOB_CREATED,
        EVENT_JOB_STARTED,
        EVENT_JOB_RETRY_SCHEDULED,
        EVENT_JOB_STARTED,
        EVENT_JOB_RETRY_SCHEDULED,
        EVENT_JOB_STARTED,
        EVENT_JOB_FAILED_FINAL,
    ]
    assert [event["attempt"] for event in body["events"] if event["event"] == EVENT_JOB_STARTED] == [1, 2, 3]
    assert body["first_error"]["type"] == "KeyError" and body["first_error"]["message"] == "'order'"
    assert body["last_error"] == {**body["last_error"], "type": "ValueError", "message": "amount is not a number"}
    assert datetime.fromisoformat(body["first_error"]["at"]) < datetime.fromisoformat(body["last_error"]["at"])
    assert moments(body) == sorted(moments(body))


def test_retry_scheduled_for_later_shows_when(client, run_jobs):
    accepted = client.post("/failing-receipts?retries=2&interval=600").get_json()
    run_jobs()

    body = client.get(accepted["status_url"]).get_json()

    assert (body["state"], body["terminal"], body["attempt"]) == (STATE_SCHEDULED, False, 1)
    assert events(body) == [EVENT_JOB_CREATED, EVENT_JOB_STARTED, EVENT_JOB_RETRY_SCHEDULED]
    scheduled_at = moments(body)[-1]
    next_run_at = datetime.fromisoformat(body["next_run_at"])
    assert timedelta(seconds=570) < next_run_at - scheduled_at < timedelta(seconds=630)
    detail = body["events"][-1]["detail"]
    assert detail.startswith("MailboxFull; next run at ")
    planned = datetime.fromisoformat(detail.removeprefix("MailboxFull; next run at "))
    assert abs(planned - next_run_at) < timedelta(seconds=1), "RQ keeps the due time to the second"


def test_reading_a_status_never_writes(client, queue, run_jobs):
    accepted = post_receipt(client).get_json()
    stray = queue.enqueue("tests.flask.tasks.send_receipt", "9")
    for _ in range(2):
        before = redis_state(queue.connection)
        for url in (
            accepted["status_url"],
            f"/jobs/{stray.id}",
            "/jobs/no-such-job",
            f"{accepted['status_url']}/result",
        ):
            client.get(url)
        assert redis_state(queue.connection) == before
        run_jobs()


def test_idempotent_replay_returns_the_same_job(client, queue):
    first = post_receipt(client, **{"Idempotency-Key": "order-1042-refund", REQUEST_ID_HEADER: GIVEN_ID})
    again = post_receipt(client, **{"Idempotency-Key": "order-1042-refund"})

    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert queue.count == 1


def test_idempotency_keys_are_scoped_per_actor_and_operation(client, queue):
    key = {"Idempotency-Key": "same-key"}
    alice = post_receipt(client, **key, **{ACTOR_HEADER: "u_alice"}).get_json()
    bob = post_receipt(client, **key, **{ACTOR_HEADER: "u_bob"}).get_json()
    alice_again = post_receipt(client, **key, **{ACTOR_HEADER: "u_alice"}).get_json()
    other_operation = client.post("/errors", headers={**key, ACTOR_HEADER: "u_alice"}).get_json()

    assert alice["job_id"] == alice_again["job_id"]
    assert len({alice["job_id"], bob["job_id"], other_operation["job_id"]}) == 3
    assert queue.count == 3


def test_same_key_with_another_payload_is_a_conflict(client, queue):
    first = post_receipt(client, "1042", **{"Idempotency-Key": "order-refund"})
    clash = post_receipt(client, "9999", **{"Idempotency-Key": "order-refund"})

    assert clash.status_code == 409
    assert clash.get_json()["error"]["reason"] == "idempotency_conflict"
    assert clash.get_json()["error"]["request_id"] == clash.headers[REQUEST_ID_HEADER]
    assert queue.job_ids == [first.get_json()["job_id"]]


def test_a_key_whose_first_request_is_still_enqueueing_answers_409(client, queue):
    first = Claim(fingerprint({"order_id": "1042"}), "job-of-the-first-request", GIVEN_ID)
    scope = Scope(QUEUE_NAME, "tests.flask.tasks.send_receipt", None)
    IdempotencyStore(queue.connection, ttl_s=60).claim(scope, "order-1042-refund", first)

    response = post_receipt(client, **{"Idempotency-Key": "order-1042-refund"})

    assert response.status_code == 409
    assert response.get_json()["error"]["reason"] == "idempotency_in_progress"
    assert queue.count == 0


def test_replay_after_rq_forgot_the_job_answers_its_expired_state(client, queue, run_jobs):
    first = client.post("/forgettable-receipts", headers={"Idempotency-Key": "forget-me"}).get_json()
    run_jobs()

    again = client.post("/forgettable-receipts", headers={"Idempotency-Key": "forget-me"})

    assert again.status_code == 202
    assert again.get_json() == {**first, "status": STATE_EXPIRED}
    assert queue.count == 0


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "caf\u00e9"])
def test_malformed_idempotency_key_is_refused(client, queue, key):
    response = client.post("/receipts", json={"order_id": "1042"}, headers=[("Idempotency-Key", key)])
    assert response.status_code == 422
    assert response.get_json()["error"]["reason"] == "invalid_idempotency_key"
    assert queue.count == 0


def test_job_dropped_by_rq_reads_expired_with_its_real_outcome_and_time(client, queue, run_jobs):
    accepted = client.post("/forgettable-receipts").get_json()
    run_jobs()
    assert queue.fetch_job(accepted["job_id"]) is None

    response = client.get(accepted["status_url"])
    body = response.get_json()

    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert (body["state"], body["terminal"]) == (STATE_EXPIRED, True)
    assert events(body) == [EVENT_JOB_CREATED, EVENT_JOB_STARTED, EVENT_JOB_SUCCEEDED, EVENT_JOB_EXPIRED]
    succeeded, expired = body["events"][-2:]
    assert expired["at"] == succeeded["at"], "result_ttl=0: RQ dropped the job when it succeeded"
    assert expired["detail"].startswith("succeeded")
    assert client.get(accepted["status_url"]).get_json() == body


@pytest.mark.parametrize("job_id", ["0" * 32, "no-such-job", "a" * 129, "bad id!"])
def test_unknown_job_reads_not_found(client, job_id):
    response = client.get(f"/jobs/{job_id}")

    assert response.status_code == 404
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["state"] == STATE_NOT_FOUND


def test_status_and_result_urls_answer_only_for_their_own_contract_and_actor(client, queue, run_jobs):
    other = client.post("/other-receipts").get_json()
    stray = queue.enqueue("tests.flask.tasks.send_receipt", "9")
    alice = post_receipt(client, **{ACTOR_HEADER: "u_alice"}).get_json()
    run_jobs()

    assert client.get(f"/jobs/{other['job_id']}").status_code == 404
    assert client.get(other["status_url"]).status_code == 200
    assert client.get(f"/jobs/{stray.id}").status_code == 404
    assert client.get(f"/jobs/{stray.id}/result").status_code == 404
    assert client.get(alice["status_url"], headers={ACTOR_HEADER: "u_bob"}).status_code == 404
    assert client.get(alice["status_url"]).status_code == 404, "no actor is not the job's actor"
    assert client.get(f"{alice['status_url']}/result", headers={ACTOR_HEADER: "u_bob"}).status_code == 404
    mine = client.get(f"{alice['status_url']}/result", headers={ACTOR_HEADER: "u_alice"})
    assert mine.status_code == 200 and mine.get_json()["result"] == "receipt for 1042"
    assert queue.connection.keys(f"{KEY_PREFIX}*") and queue.connection.keys(f"{record_key(stray.id)}*") == []


def test_result_of_an_unfinished_job_is_409(client):
    accepted = post_receipt(client).get_json()
    response = client.get(f"{accepted['status_url']}/result")
    assert response.status_code == 409 and response.get_json()["error"]["reason"] == "not_finished"


def test_garbage_in_the_record_answers_what_it_can_prove_with_one_warning(client, queue, run_jobs, caplog):
    accepted = post_receipt(client).get_json()
    run_jobs()
    key = record_key(accepted["job_id"])
    queue.connection.rpush(f"{key}:events", b"\xff not json", b'{"event": 7}')
    queue.connection.hset(
        key, mapping={"progress": "[1,", "first_error": "{}", "item_order": "nope", "terminal": "exploded", "run": "x"}
    )

    with caplog.at_level(logging.WARNING, logger="jobtrail.jobs"):
        response = client.get(accepted["status_url"])

    assert response.status_code == 200
    body = response.get_json()
    assert (body["state"], body["progress"], body["first_error"]) == (STATE_SUCCEEDED, None, None), "RQ's word"
    assert events(body) == [EVENT_JOB_CREATED, EVENT_JOB_STARTED, EVENT_JOB_SUCCEEDED]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and accepted["job_id"] in warnings[0].getMessage()


@pytest.fixture
def dead_redis_url() -> Iterator[str]:
    """A Redis URL nothing answers: its port is held by a bound socket that never listens."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{held.getsockname()[1]}/0"


def unreachable_queue(url: str) -> Queue:
    # No client-side retries: the refusal comes at once instead of after redis-py's backoff.
    connection = redis.Redis.from_url(url, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    return Queue(QUEUE_NAME, connection=connection)


def test_redis_down_answers_503_job_not_queued(dead_redis_url, span_exporter):
    client = create_app(unreachable_queue(dead_redis_url)).test_client()

    response = post_receipt(client, **{"Idempotency-Key": "k1", REQUEST_ID_HEADER: GIVEN_ID})

    assert response.status_code == 503
    error = response.get_json()["error"]
    assert (error["reason"], error["request_id"]) == ("job_not_queued", GIVEN_ID)
    (server,) = [span for span in span_exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert server.attributes[ATTR_ERROR_REASON] == "job_not_queued"


@pytest.mark.parametrize("method, url", [("GET", "/jobs/some-job"), ("POST", "/jobs/some-job/cancel")])
def test_redis_down_on_status_and_cancel_answers_a_retryable_503(dead_redis_url, method, url):
    client = create_app(unreachable_queue(dead_redis_url)).test_client()

    response = client.open(url, method=method)

    assert response.status_code == 503
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["reason"] == "status_unavailable"


@pytest.fixture
def redis_that_refuses_rq(redis_conn: redis.Redis, redis_url: str):
    """A Redis user that may touch jobtrail's keys but not RQ's: the enqueue fails after the key is claimed."""
    redis_conn.acl_setuser(
        "jobtrail-only", enabled=True, passwords=["+secret"], keys=["jobtrail:*"], commands=["+@all"], reset=True
    )
    limited = redis.Redis.from_url(redis_url, username="jobtrail-only", password="secret")
    try:
        yield limited
    finally:
        limited.close()
        redis_conn.acl_deluser("jobtrail-only")


def test_failed_enqueue_frees_the_idempotency_key_and_leaves_no_record(redis_that_refuses_rq, queue):
    refused = create_app(Queue(QUEUE_NAME, connection=redis_that_refuses_rq)).test_client()
    healthy = create_app(queue).test_client()

    response = post_receipt(refused, **{"Idempotency-Key": "retry-me"})
    assert response.status_code == 503
    assert response.get_json()["error"]["reason"] == "job_not_queued"
    assert queue.count == 0
    assert queue.connection.keys("jobtrail:*") == []

    retried = post_receipt(healthy, **{"Idempotency-Key": "retry-me"})
    assert retried.status_code == 202
    assert queue.job_ids == [retried.get_json()["job_id"]]

"""The async job contract: 202 + Location, Idempotency-Key, status with history, expired vs not_found, 503."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import redis
from jobtrail.conventions import (
    ATTR_ERROR_REASON,
    JOB_STATE_HEADER,
    REQUEST_ID_HEADER,
    STATE_EXPIRED,
    STATE_FAILED,
    STATE_NOT_FOUND,
    STATE_QUEUED,
    STATE_SCHEDULED,
    STATE_STARTED,
    STATE_SUCCEEDED,
)
from jobtrail.jobs.idempotency import Claim, IdempotencyStore, fingerprint
from opentelemetry.trace import SpanKind
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

from tests.flask.conftest import QUEUE_NAME
from tests.flask.sample_app import create_app

GIVEN_ID = "req_1111222233334444"


def post_receipt(client, order_id="1042", **headers):
    return client.post("/receipts", json={"order_id": order_id}, headers=headers)


def states(status_body):
    return [change["state"] for change in status_body["history"]]


def moments(status_body):
    return [datetime.fromisoformat(change["at"]) for change in status_body["history"]]


def test_accepted_answer_body_and_headers(client, queue):
    response = post_receipt(client, **{REQUEST_ID_HEADER: GIVEN_ID})

    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"job_id", "request_id", "status", "status_url"}
    assert body["request_id"] == GIVEN_ID == response.headers[REQUEST_ID_HEADER]
    assert body["status"] == STATE_QUEUED
    assert body["status_url"] == f"/jobs/{body['job_id']}" == response.headers["Location"]
    assert queue.job_ids == [body["job_id"]]


def test_status_of_a_queued_job(client):
    accepted = post_receipt(client, **{REQUEST_ID_HEADER: GIVEN_ID}).get_json()

    response = client.get(accepted["status_url"])

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers[JOB_STATE_HEADER] == STATE_QUEUED
    body = response.get_json()
    assert body["job_id"] == accepted["job_id"]
    assert body["request_id"] == GIVEN_ID
    assert (body["state"], body["attempt"], body["retries_left"]) == (STATE_QUEUED, 0, 0)
    assert body["next_run_at"] is None and body["error_reason"] is None
    assert states(body) == [STATE_QUEUED]


def test_status_after_success_lists_every_change_in_order(client, run_jobs):
    accepted = post_receipt(client).get_json()
    run_jobs()

    body = client.get(accepted["status_url"]).get_json()

    assert (body["state"], body["attempt"], body["error_reason"]) == (STATE_SUCCEEDED, 1, None)
    assert states(body) == [STATE_QUEUED, STATE_STARTED, STATE_SUCCEEDED]
    assert moments(body) == sorted(moments(body))


def test_failed_job_keeps_every_attempt_and_only_the_error_type(client, run_jobs):
    accepted = client.post("/failing-receipts?retries=1").get_json()
    run_jobs()

    response = client.get(accepted["status_url"])
    body = response.get_json()

    assert (body["state"], body["attempt"], body["retries_left"]) == (STATE_FAILED, 2, 0)
    assert body["error_reason"] == "MailboxFull"
    assert "mailbox of customer" not in response.get_data(as_text=True)
    assert states(body) == [STATE_QUEUED, STATE_STARTED, STATE_QUEUED, STATE_STARTED, STATE_FAILED]
    assert moments(body) == sorted(moments(body))


def test_retry_scheduled_for_later_shows_when(client, run_jobs):
    accepted = client.post("/failing-receipts?retries=2&interval=600").get_json()
    run_jobs()

    body = client.get(accepted["status_url"]).get_json()

    assert (body["state"], body["attempt"], body["retries_left"]) == (STATE_SCHEDULED, 1, 1)
    assert states(body) == [STATE_QUEUED, STATE_STARTED, STATE_SCHEDULED]
    scheduled_at = moments(body)[-1]
    next_run_at = datetime.fromisoformat(body["next_run_at"])
    assert timedelta(seconds=570) < next_run_at - scheduled_at < timedelta(seconds=630)
    assert body["error_reason"] is None


def test_reading_twice_adds_no_duplicate_changes(client, run_jobs):
    accepted = post_receipt(client).get_json()
    client.get(accepted["status_url"])
    run_jobs()
    client.get(accepted["status_url"])

    body = client.get(accepted["status_url"]).get_json()
    assert states(body) == [STATE_QUEUED, STATE_STARTED, STATE_SUCCEEDED]


def test_idempotent_replay_returns_the_same_job(client, queue):
    first = post_receipt(client, **{"Idempotency-Key": "order-1042-refund", REQUEST_ID_HEADER: GIVEN_ID})
    again = post_receipt(client, **{"Idempotency-Key": "order-1042-refund"})

    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert queue.count == 1


def test_same_key_with_another_payload_is_a_conflict(client, queue, span_exporter):
    first = post_receipt(client, "1042", **{"Idempotency-Key": "order-refund"})
    clash = post_receipt(client, "9999", **{"Idempotency-Key": "order-refund"})

    assert clash.status_code == 409
    assert clash.get_json()["error"]["reason"] == "idempotency_conflict"
    assert clash.get_json()["error"]["request_id"] == clash.headers[REQUEST_ID_HEADER]
    assert queue.job_ids == [first.get_json()["job_id"]]


def test_a_key_whose_first_request_is_still_enqueueing_answers_409(client, queue):
    first = Claim(fingerprint({"order_id": "1042"}), "job-of-the-first-request", GIVEN_ID)
    IdempotencyStore(queue.connection, queue.name, ttl_s=60).claim("order-1042-refund", first)

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


def test_different_keys_make_different_jobs(client, queue):
    one = post_receipt(client, **{"Idempotency-Key": "a"}).get_json()
    two = post_receipt(client, **{"Idempotency-Key": "b"}).get_json()
    assert one["job_id"] != two["job_id"] and queue.count == 2


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "caf\u00e9"])
def test_malformed_idempotency_key_is_refused(client, queue, key):
    response = client.post("/receipts", json={"order_id": "1042"}, headers=[("Idempotency-Key", key)])
    assert response.status_code == 422
    assert response.get_json()["error"]["reason"] == "invalid_idempotency_key"
    assert queue.count == 0


def test_job_dropped_by_rq_reads_expired(client, queue, run_jobs):
    accepted = client.post("/forgettable-receipts").get_json()
    run_jobs()
    assert queue.fetch_job(accepted["job_id"]) is None

    response = client.get(accepted["status_url"])
    body = response.get_json()

    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert body["state"] == STATE_EXPIRED
    assert states(body) == [STATE_QUEUED, STATE_STARTED, STATE_SUCCEEDED, STATE_EXPIRED]
    assert states(client.get(accepted["status_url"]).get_json()) == states(body)


@pytest.mark.parametrize("job_id", ["0" * 32, "no-such-job", "a" * 129, "bad id!"])
def test_unknown_job_reads_not_found(client, job_id):
    response = client.get(f"/jobs/{job_id}")

    assert response.status_code == 404
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["state"] == STATE_NOT_FOUND


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
    assert response.get_json() == {"error": {"reason": "job_not_queued", "request_id": GIVEN_ID}}
    (server,) = [span for span in span_exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert server.attributes[ATTR_ERROR_REASON] == "job_not_queued"


def test_redis_down_on_status_answers_503_no_store(dead_redis_url):
    client = create_app(unreachable_queue(dead_redis_url)).test_client()

    response = client.get("/jobs/some-job")

    assert response.status_code == 503
    assert response.headers["Cache-Control"] == "no-store"
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


def test_failed_enqueue_frees_the_idempotency_key(redis_that_refuses_rq, queue):
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

"""The demo API over the real Flask layer and a real Redis: page, validation, the 202 contract, the switch."""

from __future__ import annotations

import json
import logging
import re

import pytest
from jobtrail.conventions import (
    LOG_HTTP_METHOD,
    LOG_HTTP_ROUTE,
    LOG_HTTP_STATUS,
    LOG_REASON,
    LOG_REQUEST_ID,
    LOG_USER_ID,
    STATE_CANCELLED,
)
from jobtrail.demo.api import USER_COOKIE, create_app
from jobtrail.demo.settings import SCREEN, WEB_SERVICE, DemoSettings
from rq.job import Job

RECEIPT = {"refund_id": "RF-1042", "email": "customer@example.com", "amount_cents": 4250}


@pytest.fixture
def client(redis_conn, redis_url):
    settings = DemoSettings(
        redis_url=redis_url,
        retry_intervals=(1, 2),
        span_intake_forward_to="http://127.0.0.1:9/v1/traces",
        jaeger_ui_url="http://127.0.0.1:16686/",
    )
    return create_app(settings, redis_conn).test_client()


def test_page_loads_the_kit_and_its_config(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<script src="/jobtrail/jobtrail.js"></script>' in html
    config = json.loads(re.search(r'<script id="demo-config" type="application/json">(.*?)</script>', html).group(1))
    link = "http://127.0.0.1:16686/trace/{trace_id}"
    assert config == {"serviceName": WEB_SERVICE, "screen": SCREEN, "jaegerTraceLink": link}
    assert client.get("/static/demo.js").status_code == 200
    assert client.get("/static/secrets.txt").status_code == 404
    assert client.get("/jobtrail/jobtrail.js").status_code == 200


def test_invalid_receipt_is_refused_with_the_stable_shape(client) -> None:
    response = client.post("/api/receipts", json={**RECEIPT, "amount_cents": -5})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["reason"] == "validation_failed"
    assert error["request_id"] == response.headers["X-Request-ID"]


def test_receipt_is_accepted_with_the_configured_retries(client, redis_conn) -> None:
    response = client.post("/api/receipts", json=RECEIPT)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status_url"] == f"/api/receipts/{body['job_id']}" == response.headers["Location"]
    job = Job.fetch(body["job_id"], connection=redis_conn)
    assert job.func_name == "jobtrail.demo.jobs.send_refund_receipt"
    assert (job.retries_left, job.retry_intervals) == (2, [1, 2])
    status = client.get(body["status_url"])
    assert status.status_code == 200
    assert status.get_json()["state"] == "queued"
    assert status.headers["Cache-Control"] == "no-store"


def test_email_provider_switch(client) -> None:
    assert client.get("/api/email-provider").get_json() == {"down": False}
    assert client.put("/api/email-provider", json={"down": True}).get_json() == {"down": True}
    assert client.get("/api/email-provider").get_json() == {"down": True}
    assert client.put("/api/email-provider", json={"down": "yes"}).status_code == 422


def test_imports_and_results_refuse_what_they_cannot_do(client) -> None:
    too_many = {"files": [{"name": f"f{i}.csv", "content": "refund_id,amount\n"} for i in range(11)]}
    assert client.post("/api/imports", json=too_many).status_code == 422
    assert client.post("/api/imports", json={"files": [{"name": "a.csv"}]}).status_code == 422
    accepted = client.post("/api/imports", json={"files": [{"name": "a.csv", "content": "refund_id,amount\n"}]})
    assert accepted.status_code == 202
    pending = client.get(f"/api/jobs/{accepted.get_json()['job_id']}/result")
    assert pending.status_code == 409 and pending.get_json()["error"]["reason"] == "not_finished"
    assert client.get("/api/jobs/no-such-job/result").status_code == 404


def test_status_and_result_urls_answer_only_for_their_own_contract_and_user(client, redis_conn) -> None:
    client.set_cookie(USER_COOKIE, "u_alice")
    receipt = client.post("/api/receipts", json=RECEIPT).get_json()
    assert client.get(receipt["status_url"]).status_code == 200
    assert client.get(f"/api/imports/{receipt['job_id']}").status_code == 404, "another contract's job"
    assert client.get(f"/api/reports/{receipt['job_id']}").status_code == 404
    stray = Job.create("jobtrail.demo.jobs.generate_report", args=("x",), connection=redis_conn)
    stray.save()
    assert client.get(f"/api/reports/{stray.id}").status_code == 404, "a job no contract accepted"
    assert client.get(f"/api/jobs/{stray.id}/result").status_code == 404
    client.set_cookie(USER_COOKIE, "u_bob")
    assert client.get(receipt["status_url"]).status_code == 404, "another user's job"
    assert client.post(f"{receipt['status_url']}/cancel").status_code == 404
    assert client.get(f"/api/jobs/{receipt['job_id']}/result").status_code == 404


def test_cancel_a_queued_receipt_then_again(client) -> None:
    accepted = client.post("/api/receipts", json=RECEIPT).get_json()
    cancelled = client.post(f"{accepted['status_url']}/cancel")
    assert cancelled.status_code == 202 and cancelled.get_json()["state"] == STATE_CANCELLED
    again = client.post(f"{accepted['status_url']}/cancel")
    assert again.status_code == 409 and again.get_json()["error"]["reason"] == "already_terminal"
    assert client.post("/api/reports/no-such-job/cancel").status_code == 404


def test_refusals_carry_their_human_detail(client) -> None:
    refused = client.post("/api/receipts", json={**RECEIPT, "refund_id": "1042"}).get_json()["error"]
    assert (refused["reason"], refused["detail"]) == ("validation_failed", "refund_id must look like RF-1042")


def test_one_log_line_per_request_with_the_shared_field_names(client, caplog) -> None:
    client.set_cookie(USER_COOKIE, "u_alice")
    with caplog.at_level(logging.INFO, logger="jobtrail.flask.access"):
        accepted = client.post("/api/receipts", json=RECEIPT, headers={"X-Request-ID": "req_00000000000000aa"})
        for _ in range(3):
            client.get(accepted.get_json()["status_url"])
        client.post("/api/receipts", json={})
    lines = [record for record in caplog.records if record.name == "jobtrail.flask.access"]
    assert [(r.method, r.route, r.status) for r in lines] == [
        ("POST", "/api/receipts", 202),
        *[("GET", "/api/receipts/<job_id>", 200)] * 3,
        ("POST", "/api/receipts", 422),
    ]
    first, *_polls, refused = lines
    assert getattr(first, LOG_REQUEST_ID) == "req_00000000000000aa"
    assert {getattr(r, LOG_USER_ID) for r in lines} == {"u_alice"}
    assert getattr(refused, LOG_REASON) == "validation_failed" and not hasattr(first, LOG_REASON)
    assert {LOG_HTTP_METHOD, LOG_HTTP_ROUTE, LOG_HTTP_STATUS} <= set(vars(first))


def test_health(client) -> None:
    assert client.get("/healthz").get_json() == {"ok": True}

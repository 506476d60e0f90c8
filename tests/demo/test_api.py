"""The demo API over the real Flask layer and a real Redis: page, validation, the 202 contract, the switch."""

from __future__ import annotations

import json
import re

import pytest
from jobtrail.demo.api import create_app
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


def test_health(client) -> None:
    assert client.get("/healthz").get_json() == {"ok": True}

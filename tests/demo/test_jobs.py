"""The demo's jobs on a real RQ SimpleWorker: real work, one span per step, failures where the story says."""

from __future__ import annotations

import pytest
from jobtrail.demo import email_provider
from jobtrail.demo.jobs import generate_report, import_files, send_refund_receipt
from opentelemetry.trace import StatusCode
from rq import Queue, Retry, SimpleWorker


@pytest.fixture
def demo_env(monkeypatch, redis_url):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JOBTRAIL_DEMO_EMAIL_FAILURES", "2")
    monkeypatch.setenv("JOBTRAIL_DEMO_WORK_SCALE", "0.01")


def run_all(queue: Queue) -> None:
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def test_receipt_login_fails_twice_then_the_email_goes_out(demo_env, redis_conn, span_exporter) -> None:
    queue = Queue("emails", connection=redis_conn)
    job = queue.enqueue(send_refund_receipt, "RF-1042", "customer@example.com", 4250, retry=Retry(max=3))
    run_all(queue)
    assert job.get_status(refresh=True) == "finished"
    assert job.return_value()["provider_answer"].startswith("250 ")
    sends = [span for span in span_exporter.get_finished_spans() if span.name == "send email"]
    assert [span.status.status_code for span in sends] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert all(span.status.description.startswith("SMTPAuthenticationError: (535, ") for span in sends[:2])


def test_receipt_with_the_provider_down_fails_every_attempt(demo_env, redis_conn) -> None:
    email_provider.set_down(redis_conn, True)
    queue = Queue("emails", connection=redis_conn)
    job = queue.enqueue(send_refund_receipt, "RF-1042", "customer@example.com", 4250, retry=Retry(max=3))
    run_all(queue)
    assert job.get_status(refresh=True) == "failed"
    assert "SMTPAuthenticationError" in job.latest_result().exc_string


def test_import_reports_the_bad_file_and_keeps_the_good_ones(demo_env, redis_conn, span_exporter) -> None:
    files = [
        {"name": "good.csv", "content": "refund_id,amount\nRF-1,1.50\nRF-2,2\n"},
        {"name": "bad.csv", "content": "refund_id,amount\nRF-3,twelve\n"},
        {"name": "wrong-columns.csv", "content": "id,value\n1,2\n"},
    ]
    queue = Queue("imports", connection=redis_conn)
    job = queue.enqueue(import_files, files)
    run_all(queue)
    result = job.return_value()
    assert result["imported"] == [{"file": "good.csv", "rows": 2}]
    assert result["failed"] == [
        {"file": "bad.csv", "error": "line 2: amount 'twelve' is not a number"},
        {"file": "wrong-columns.csv", "error": "expected the columns refund_id,amount"},
    ]
    steps = {span.name: span for span in span_exporter.get_finished_spans() if span.name.startswith("import ")}
    assert steps["import good.csv"].status.status_code == StatusCode.UNSET
    assert steps["import bad.csv"].status.status_code == StatusCode.ERROR
    assert steps["import bad.csv"].status.description == "ValueError: line 2: amount 'twelve' is not a number"


def test_report_does_its_steps_as_child_spans(demo_env, redis_conn, span_exporter) -> None:
    queue = Queue("reports", connection=redis_conn)
    job = queue.enqueue(generate_report, "report-2026-11")
    run_all(queue)
    result = job.return_value()
    assert result["report_id"] == "report-2026-11" and result["customers"] > 0
    names = [span.name for span in span_exporter.get_finished_spans()]
    assert [name for name in names if name in ("load orders", "compute totals", "render report")] == [
        "load orders",
        "compute totals",
        "render report",
    ]

"""The demo's jobs on a real RQ SimpleWorker: real work, one span per step, failures where the story says."""

from __future__ import annotations

import pytest
from jobtrail.conventions import ATTR_JOB_ATTEMPT, EVENT_JOB_CANCEL_REQUESTED
from jobtrail.demo import email_provider
from jobtrail.demo.jobs import generate_report, import_files, send_refund_receipt
from jobtrail.jobs import Caller, Contract
from jobtrail.jobs.record import Event, JobRecord, now
from jobtrail.jobs.requeue import requeue
from jobtrail.rq import RQInstrumentor
from jobtrail.trail import build_timeline
from jobtrail.trail.model import spans_from_request
from jobtrail.trail.timeline import STEP_JOB_PARTIAL, STEP_NOTHING_BROKEN
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.trace import StatusCode
from rq import Queue, Retry, SimpleWorker


@pytest.fixture
def demo_env(monkeypatch, redis_url):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JOBTRAIL_DEMO_EMAIL_FAILURES", "2")
    monkeypatch.setenv("JOBTRAIL_DEMO_WORK_SCALE", "0.01")
    monkeypatch.setenv("JOBTRAIL_DEMO_REPORT_SECONDS", "0")


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


@pytest.fixture
def instrumented(tracer_provider):
    instrumentor = RQInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    instrumentor.uninstrument()


def trail_of(span_exporter) -> list[str]:
    return build_timeline(spans_from_request(encode_spans(span_exporter.get_finished_spans()))).lines()


def test_the_trail_tells_the_import_items_and_the_partial_result(demo_env, redis_conn, span_exporter, instrumented):
    files = [
        {"name": "good.csv", "content": "refund_id,amount\nRF-1,1.50\n"},
        {"name": "bad.csv", "content": "refund_id,amount\nRF-3,twelve\n"},
    ]
    queue = Queue("imports", connection=redis_conn)
    job_id = (
        Contract(queue, lambda job_id: f"/api/imports/{job_id}")
        .accept(Caller("req_00000000000000ab"), import_files, (files,), {})
        .body["job_id"]
    )
    run_all(queue)

    lines = trail_of(span_exporter)

    assert "  1 item(s) done: good.csv" in lines
    assert "  item \"bad.csv\" failed for good: ValueError: line 2: amount 'twelve' is not a number" in lines
    assert "  the job finished only in part: 1 of 2 items succeeded" in lines
    assert "final: partly done" in lines
    assert lines[-1] == (
        f"first broken step: {STEP_JOB_PARTIAL}: job {job_id}: 1 of 2 items succeeded; "
        "item \"bad.csv\" failed: ValueError: line 2: amount 'twelve' is not a number"
    )


def test_the_trail_tells_a_cancelled_report_and_a_requeue(demo_env, redis_conn, span_exporter, instrumented):
    queue = Queue("reports", connection=redis_conn)
    contract = Contract(queue, lambda job_id: f"/api/reports/{job_id}")
    job_id = contract.accept(Caller("req_00000000000000ac"), generate_report, ("report-2026-11",), {}).body["job_id"]
    JobRecord(redis_conn, job_id).append(Event(EVENT_JOB_CANCEL_REQUESTED, now()), fields={"cancel_requested": "1"})
    run_all(queue)

    lines = trail_of(span_exporter)

    cancelled = [line for line in lines[:-1] if "cancelled on request" in line]
    assert len(cancelled) == 1 and cancelled[0].startswith(
        "  the job was cancelled on request; it stopped at a safe point"
    )
    assert "final: cancelled" in lines
    assert lines[-1].startswith(f"first broken step: {STEP_NOTHING_BROKEN}: job {job_id} was cancelled on request at ")
    assert contract.status(job_id, Caller(None)).body["state"] == "cancelled"


def test_the_trail_tells_an_operator_requeue_on_the_next_attempt(demo_env, redis_conn, span_exporter, instrumented):
    files = [{"name": "bad.csv", "content": "refund_id,amount\nRF-3,twelve\n"}]
    queue = Queue("imports", connection=redis_conn)
    contract = Contract(queue, lambda job_id: f"/api/imports/{job_id}")
    job_id = contract.accept(Caller("req_00000000000000ad"), import_files, (files,), {}).body["job_id"]
    run_all(queue)
    requeue(redis_conn, job_id, failed_items_only=True)
    run_all(queue)

    lines = trail_of(span_exporter)

    requeued = [line for line in lines if "requeued" in line]
    assert len(requeued) == 1, lines
    assert "requeued by an operator at" in requeued[0]
    assert requeued[0].endswith("(1 of 1 items (failed items only))")
    status = contract.status(job_id, Caller(None)).body
    assert [event["attempt"] for event in status["events"] if event["event"] == "job_started"] == [1, 2]


def test_the_rq_attempt_spans_number_a_requeued_run_like_the_record(demo_env, redis_conn, span_exporter, instrumented):
    queue = Queue("imports", connection=redis_conn)
    contract = Contract(queue, lambda job_id: f"/api/imports/{job_id}")
    files = [{"name": "bad.csv", "content": "refund_id,amount\nRF-3,twelve\n"}]
    job_id = contract.accept(Caller("req_00000000000000ae"), import_files, (files,), {}).body["job_id"]
    run_all(queue)
    requeue(redis_conn, job_id)
    run_all(queue)
    attempts = [span for span in span_exporter.get_finished_spans() if span.name == "process imports"]
    assert [span.attributes[ATTR_JOB_ATTEMPT] for span in attempts] == [1, 2]

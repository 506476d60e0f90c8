"""The processor's own counters, as a scraper and an operator see them."""

from __future__ import annotations

import re
import urllib.request

from .builders import attempt_root, new_trace_id, request, span
from .conftest import scrape


def series(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_account_for_every_span(processor):
    enqueue = span("send default", new_trace_id())
    root = attempt_root(enqueue)
    early_child = span("held child", new_trace_id(), b"\x05" * 8)
    processor.consume(request(enqueue, root, span("job work", root.trace_id, root.span_id)), None)
    processor.consume(request(early_child, span("bad", b"\x01")), None)

    text = scrape(processor)

    assert "# TYPE jobtrail_processor_spans_received_total counter" in text
    assert "# TYPE jobtrail_processor_spans_held gauge" in text
    values = series(text)
    assert values["jobtrail_processor_spans_received_total"] == 5
    assert values["jobtrail_processor_spans_stitched_total"] == 2
    assert values['jobtrail_processor_spans_forwarded_unchanged_total{reason="no_job_link"}'] == 1
    assert values["jobtrail_processor_spans_rejected_total"] == 1
    assert values["jobtrail_processor_spans_held"] == 1
    unchanged = sum(v for k, v in values.items() if k.startswith("jobtrail_processor_spans_forwarded_unchanged_total"))
    assert values["jobtrail_processor_spans_received_total"] == (
        values["jobtrail_processor_spans_rejected_total"]
        + values["jobtrail_processor_spans_stitched_total"]
        + unchanged
        + values["jobtrail_processor_spans_held"]
    )
    assert re.search(r'^jobtrail_processor_export_queue_spans\{exporter="grpc://127\.0\.0\.1:\d+"\} \d+$', text, re.M)


def test_healthz_answers(processor):
    with urllib.request.urlopen(f"http://127.0.0.1:{processor.http_port}/healthz", timeout=10) as response:
        assert response.status == 200 and response.read() == b'{"status":"ok"}'


def test_counters_are_logged_at_stop(processor, caplog):
    processor.consume(request(span("plain", new_trace_id())), None)
    with caplog.at_level("INFO", logger="jobtrail.processor"):
        processor.stop()
    assert "spans_received_total=1" in caplog.text
    assert "spans_forwarded_unchanged_total{reason=no_job_link}=1" in caplog.text

"""Request ids and trace headers added by instrument_app on top of opentelemetry-instrumentation-flask."""

from __future__ import annotations

import logging

import flask
import pytest
from jobtrail.conventions import ATTR_REQUEST_ID, REQUEST_ID_BAGGAGE_KEY, REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from jobtrail.flask import instrument_app, uninstrument_app
from jobtrail.logs import CorrelationFilter
from opentelemetry import baggage
from opentelemetry.trace import SpanKind

GIVEN_ID = "req_0123456789abcdef"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


def server_spans(span_exporter):
    return [span for span in span_exporter.get_finished_spans() if span.kind == SpanKind.SERVER]


def test_well_formed_request_id_is_kept_everywhere(client, span_exporter):
    response = client.get("/whoami", headers={REQUEST_ID_HEADER: GIVEN_ID})

    assert response.headers[REQUEST_ID_HEADER] == GIVEN_ID
    assert response.get_json() == {"baggage_request_id": GIVEN_ID}
    (span,) = server_spans(span_exporter)
    assert span.attributes[ATTR_REQUEST_ID] == GIVEN_ID


@pytest.mark.parametrize(
    "malformed",
    ["", "req_0123", "REQ_0123456789abcdef", "req_0123456789ABCDEF", "req_0123456789abcdef0", "x" * 5000, "<script>"],
)
def test_malformed_request_id_is_replaced(client, span_exporter, malformed):
    response = client.get("/whoami", headers={REQUEST_ID_HEADER: malformed})

    made = response.headers[REQUEST_ID_HEADER]
    assert made != malformed and REQUEST_ID_PATTERN.fullmatch(made)
    assert response.get_json() == {"baggage_request_id": made}
    (span,) = server_spans(span_exporter)
    assert span.attributes[ATTR_REQUEST_ID] == made


def test_each_request_without_an_id_gets_its_own(client):
    first = client.get("/whoami").headers[REQUEST_ID_HEADER]
    second = client.get("/whoami").headers[REQUEST_ID_HEADER]
    assert first != second
    assert REQUEST_ID_PATTERN.fullmatch(first) and REQUEST_ID_PATTERN.fullmatch(second)


def test_baggage_does_not_outlive_the_request(client):
    client.get("/whoami", headers={REQUEST_ID_HEADER: GIVEN_ID})

    assert baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY) is None


def test_trace_headers_name_the_server_span(client, span_exporter):
    response = client.get("/whoami", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"})

    (span,) = server_spans(span_exporter)
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    expected = f"00-{TRACE_ID}-{span.context.span_id:016x}-01"
    assert response.headers["traceresponse"] == expected
    assert response.headers["Server-Timing"] == f'traceparent;desc="{expected}"'


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        f"00-{'0' * 32}-{PARENT_SPAN_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID.upper()}-{PARENT_SPAN_ID}-01",
        f"ff-{TRACE_ID}-{PARENT_SPAN_ID}-01",
    ],
)
def test_malformed_traceparent_starts_a_new_trace(client, span_exporter, traceparent):
    response = client.get("/whoami", headers={"traceparent": traceparent})

    assert response.status_code == 200
    (span,) = server_spans(span_exporter)
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != TRACE_ID
    assert response.headers["traceresponse"].split("-")[1] == f"{span.context.trace_id:032x}"


def test_cross_origin_requests_may_read_the_headers(client):
    response = client.get("/whoami", headers={"Origin": "http://other.example"})
    exposed = {name.strip().lower() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "traceresponse", "server-timing", "x-job-state"} <= exposed

    assert "Access-Control-Expose-Headers" not in client.get("/whoami").headers


def test_instrumenting_twice_is_harmless(app, client, span_exporter):
    instrument_app(app)
    response = client.get("/whoami", headers={REQUEST_ID_HEADER: GIVEN_ID})

    assert response.headers.getlist(REQUEST_ID_HEADER) == [GIVEN_ID]
    assert len(response.headers.getlist("Server-Timing")) == 1
    assert len(server_spans(span_exporter)) == 1


def test_uninstrumenting_removes_spans_ids_and_headers(span_exporter):
    app = flask.Flask(__name__)
    instrument_app(app)
    app.get("/ping")(lambda: "pong")

    uninstrument_app(app)
    response = app.test_client().get("/ping", headers={REQUEST_ID_HEADER: GIVEN_ID})

    assert response.status_code == 200
    assert REQUEST_ID_HEADER not in response.headers and "traceresponse" not in response.headers
    assert server_spans(span_exporter) == []


def test_an_app_server_timing_entry_is_kept(span_exporter):
    app = flask.Flask(__name__)
    instrument_app(app)

    @app.get("/timed")
    def timed():
        return "ok", 200, {"Server-Timing": "db;dur=53"}

    timings = app.test_client().get("/timed").headers.getlist("Server-Timing")
    assert timings[0] == "db;dur=53"
    assert timings[1].startswith('traceparent;desc="00-')


def test_excluded_url_still_gets_a_request_id_but_no_trace_headers(span_exporter):
    app = flask.Flask(__name__)
    instrument_app(app, excluded_urls="healthz")

    @app.get("/healthz")
    def healthz():
        return "ok"

    response = app.test_client().get("/healthz", headers={REQUEST_ID_HEADER: GIVEN_ID})

    assert response.headers[REQUEST_ID_HEADER] == GIVEN_ID
    assert "traceresponse" not in response.headers
    assert server_spans(span_exporter) == []


class Collecting(logging.Handler):
    """Keeps every record it is handed, after its filters ran."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_log_records_of_the_request_carry_its_ids(span_exporter):
    app = flask.Flask(__name__)
    instrument_app(app)
    shop_log = logging.getLogger("tests.shop")

    @app.post("/orders")
    def order():
        shop_log.warning("order taken")
        return "", 204

    collecting = Collecting()
    collecting.addFilter(CorrelationFilter("shop-api"))
    logging.getLogger().addHandler(collecting)
    try:
        app.test_client().post("/orders", headers={REQUEST_ID_HEADER: GIVEN_ID})
        shop_log.warning("after the request")
    finally:
        logging.getLogger().removeHandler(collecting)

    during, after = [record for record in collecting.records if record.name == "tests.shop"]
    (span,) = server_spans(span_exporter)
    assert (during.request_id, during.trace_id) == (GIVEN_ID, f"{span.context.trace_id:032x}")
    assert (after.request_id, after.trace_id) == (None, None)

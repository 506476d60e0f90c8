"""The stable refusal shape: {"error": {"reason", "request_id"}}, the status, and the reason on the span."""

from __future__ import annotations

import flask
import pytest
from jobtrail.conventions import ATTR_ERROR_REASON, REQUEST_ID_HEADER
from jobtrail.flask import instrument_app, refuse
from opentelemetry.trace import SpanKind

GIVEN_ID = "req_00000000000000aa"


def test_validation_refusal_shape_and_span(client, span_exporter, queue):
    response = client.post("/receipts", json={"order_id": ""}, headers={REQUEST_ID_HEADER: GIVEN_ID})

    assert response.status_code == 422
    assert response.get_json() == {
        "error": {"reason": "order_id_missing", "request_id": GIVEN_ID, "detail": "order_id must be a non-empty string"}
    }
    (server,) = [span for span in span_exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert server.attributes[ATTR_ERROR_REASON] == "order_id_missing"
    assert queue.count == 0


def test_refusal_without_detail_has_exactly_reason_and_request_id():
    app = flask.Flask(__name__)
    instrument_app(app)

    @app.get("/closed")
    def closed():
        return refuse("shop_closed", 409)

    response = app.test_client().get("/closed")
    body = response.get_json()
    assert response.status_code == 409
    assert set(body) == {"error"} and set(body["error"]) == {"reason", "request_id"}
    assert body["error"]["request_id"] == response.headers[REQUEST_ID_HEADER]


@pytest.mark.parametrize(("reason", "status"), [("Not Stable", 422), ("", 422), ("x" * 65, 422), ("fine", 200)])
def test_refuse_rejects_unstable_reasons_and_non_error_statuses(reason, status):
    app = flask.Flask(__name__)
    with app.test_request_context("/"), pytest.raises(ValueError):
        refuse(reason, status)

"""jobtrail for Flask: one trace from the click to the enqueue, request ids, and an honest 202 contract.

Usage::

    from flask import Flask, request
    from rq import Queue
    from jobtrail.flask import (
        JobContract, browser_kit_blueprint, instrument_app, refuse, span_intake_blueprint,
    )

    app = Flask(__name__)
    instrument_app(app)                      # opentelemetry-instrumentation-flask + request ids + trace headers
    app.register_blueprint(browser_kit_blueprint())                             # GET /jobtrail/jobtrail.js
    app.register_blueprint(span_intake_blueprint())   # POST /v1/traces -> OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT
    jobs = JobContract(Queue("mail", connection=redis_conn), status_endpoint="job_status")

    @app.post("/receipts")
    def send_receipt():
        order = (request.get_json(silent=True) or {}).get("order_id")
        if not order:
            return refuse("order_id_missing", 422)
        return jobs.accept(send_receipt_job, order, idempotency_payload={"order_id": order})

    @app.get("/jobs/<job_id>")
    def job_status(job_id):
        return jobs.status_response(job_id)

See docs/browser.md for the contract's JSON shapes and the browser kit.
"""

from __future__ import annotations

from jobtrail.flask.browser_kit import browser_kit_blueprint
from jobtrail.flask.instrument import instrument_app, uninstrument_app
from jobtrail.flask.intake import span_intake_blueprint
from jobtrail.flask.jobs import JobContract
from jobtrail.flask.refusals import refuse

__all__ = [
    "JobContract",
    "browser_kit_blueprint",
    "instrument_app",
    "refuse",
    "span_intake_blueprint",
    "uninstrument_app",
]

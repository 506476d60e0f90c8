"""The demo API: three scenarios behind the honest 202 + status contract, traced from the page to the worker.

It uses only the public API of ``jobtrail.flask`` (``instrument_app``, ``log_requests``, ``JobContract``,
``refuse``, the span intake and the browser kit blueprints), so it is also the usage example. Handlers only
validate and enqueue: they never run a job function and never start a thread (tests/demo/test_boundary.py).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import flask
import redis
from jobtrail.demo import email_provider, jobs
from jobtrail.demo.settings import QUEUE_EMAILS, QUEUE_IMPORTS, QUEUE_REPORTS, SCREEN, WEB_SERVICE, DemoSettings
from jobtrail.flask import (
    JobContract,
    browser_kit_blueprint,
    instrument_app,
    log_requests,
    refuse,
    span_intake_blueprint,
)
from rq import Queue, Retry

REFUND_ID_PATTERN = re.compile(r"^RF-[0-9]{4,10}$")
PERIOD_PATTERN = re.compile(r"^20[0-9]{2}-(0[1-9]|1[0-2])$")
MAX_IMPORT_FILES = 10
MAX_IMPORT_FILE_BYTES = 64 * 1024
MAX_AMOUNT_CENTS = 1_000_000
USER_COOKIE = "jobtrail_demo_user"
"""The demo's stand-in for a login: the page picks an opaque user id per browser and keeps it in this cookie."""
USER_ID_PATTERN = re.compile(r"^u_[0-9a-z]{1,32}$")


def current_user() -> str | None:
    """The caller's opaque user id (the job contract's actor), or None for a client without the cookie."""
    user = flask.request.cookies.get(USER_COOKIE)
    return user if user is not None and USER_ID_PATTERN.fullmatch(user) else None


def create_app(settings: DemoSettings, connection: redis.Redis) -> flask.Flask:
    """The API and the page; ``connection`` is the Redis the queues and the email provider's switch live in."""
    app = flask.Flask(__name__, static_folder=None)
    # Health probes (every few seconds under compose) would bury the user actions in Jaeger.
    instrument_app(app, excluded_urls="healthz")
    log_requests(app, user_id=current_user)
    app.register_blueprint(browser_kit_blueprint())
    app.register_blueprint(
        span_intake_blueprint(forward_to=settings.span_intake_forward_to, allowed_origins=settings.allowed_origins)
    )
    contracts = {
        name: JobContract(Queue(name, connection=connection), status_endpoint=endpoint, actor=current_user)
        for name, endpoint in (
            (QUEUE_REPORTS, "report_status"),
            (QUEUE_EMAILS, "receipt_status"),
            (QUEUE_IMPORTS, "import_status"),
        )
    }
    static = resources.files("jobtrail.demo") / "static"
    page_config = {
        "serviceName": WEB_SERVICE,
        "screen": SCREEN,
        "jaegerTraceLink": settings.jaeger_trace_link(),
    }

    @app.get("/")
    def index() -> flask.Response:
        page = (static / "index.html").read_text(encoding="utf-8")
        page = page.replace("{{CONFIG}}", json.dumps(page_config).replace("<", "\\u003c"))
        return flask.Response(page, mimetype="text/html")

    @app.get("/static/<name>")
    def static_file(name: str) -> flask.Response:
        kinds = {"demo.js": "text/javascript", "demo.css": "text/css"}
        if name not in kinds:
            flask.abort(404)
        return flask.Response((static / name).read_text(encoding="utf-8"), mimetype=kinds[name])

    @app.get("/healthz")
    def healthz() -> Any:
        try:
            connection.ping()
        except redis.RedisError:
            return refuse("redis_unreachable", 503)
        return {"ok": True}

    @app.post("/api/reports")
    def create_report() -> Any:
        body = _json_body()
        period = body.get("period")
        if not isinstance(period, str) or not PERIOD_PATTERN.match(period):
            return refuse("validation_failed", 422, detail="period must look like 2026-11")
        return contracts[QUEUE_REPORTS].accept(jobs.generate_report, f"report-{period}", idempotency_payload=body)

    @app.post("/api/receipts")
    def send_receipt() -> Any:
        body = _json_body()
        refund_id, email, amount = body.get("refund_id"), body.get("email"), body.get("amount_cents")
        if not isinstance(refund_id, str) or not REFUND_ID_PATTERN.match(refund_id):
            return refuse("validation_failed", 422, detail="refund_id must look like RF-1042")
        if not isinstance(email, str) or "@" not in email or len(email) > 254:
            return refuse("validation_failed", 422, detail="email is not an email address")
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_AMOUNT_CENTS:
            return refuse("validation_failed", 422, detail=f"amount_cents must be 1..{MAX_AMOUNT_CENTS}")
        intervals = list(settings.retry_intervals)
        return contracts[QUEUE_EMAILS].accept(
            jobs.send_refund_receipt,
            refund_id,
            email,
            amount,
            retry=Retry(max=len(intervals), interval=intervals),
            idempotency_payload=body,
        )

    @app.post("/api/imports")
    def import_files() -> Any:
        body = _json_body()
        files = body.get("files")
        if not isinstance(files, list) or not 0 < len(files) <= MAX_IMPORT_FILES:
            return refuse("validation_failed", 422, detail=f"files must be a list of 1..{MAX_IMPORT_FILES} files")
        for item in files:
            if not isinstance(item, dict) or not all(isinstance(item.get(key), str) for key in ("name", "content")):
                return refuse("validation_failed", 422, detail="each file needs a name and a content string")
            if len(item["content"].encode()) > MAX_IMPORT_FILE_BYTES:
                return refuse("validation_failed", 422, detail=f"{item['name']} is over {MAX_IMPORT_FILE_BYTES} bytes")
        files = [{"name": item["name"], "content": item["content"]} for item in files]
        names = [item["name"] for item in files]
        if len(set(names)) != len(names):
            return refuse("validation_failed", 422, detail="each file needs its own name")
        return contracts[QUEUE_IMPORTS].accept(jobs.import_files, files, idempotency_payload=body, job_items=names)

    @app.get("/api/reports/<job_id>")
    def report_status(job_id: str) -> Any:
        return contracts[QUEUE_REPORTS].status_response(job_id)

    @app.get("/api/receipts/<job_id>")
    def receipt_status(job_id: str) -> Any:
        return contracts[QUEUE_EMAILS].status_response(job_id)

    @app.get("/api/imports/<job_id>")
    def import_status(job_id: str) -> Any:
        return contracts[QUEUE_IMPORTS].status_response(job_id)

    @app.post("/api/reports/<job_id>/cancel")
    def cancel_report(job_id: str) -> Any:
        return contracts[QUEUE_REPORTS].cancel_response(job_id)

    @app.post("/api/receipts/<job_id>/cancel")
    def cancel_receipt(job_id: str) -> Any:
        return contracts[QUEUE_EMAILS].cancel_response(job_id)

    @app.post("/api/imports/<job_id>/cancel")
    def cancel_import(job_id: str) -> Any:
        return contracts[QUEUE_IMPORTS].cancel_response(job_id)

    @app.get("/api/jobs/<job_id>/result")
    def job_result(job_id: str) -> Any:
        """What a finished job returned (the import's per-file outcome), for the job's own user; no-store."""
        for contract in contracts.values():
            if contract.owns(job_id):
                return contract.result_response(job_id)
        return contracts[QUEUE_IMPORTS].result_response(job_id)  # 404 not_found, like any job not ours

    @app.route("/api/email-provider", methods=["GET", "PUT"])
    def email_provider_switch() -> Any:
        if flask.request.method == "PUT":
            down = _json_body().get("down")
            if not isinstance(down, bool):
                return refuse("validation_failed", 422, detail="down must be true or false")
            email_provider.set_down(connection, down)
        return {"down": email_provider.is_down(connection)}

    return app


def _json_body() -> dict[str, Any]:
    """The request's JSON object, or an empty one (validation then names the missing field)."""
    body = flask.request.get_json(silent=True)
    return body if isinstance(body, dict) else {}

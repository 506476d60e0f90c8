"""The demo's background jobs: real work, one child span per step (children of the attempt span).

A step that raises ends with status ERROR, ``Type: message`` as its description and the exception
recorded (the SDK does that for ``start_as_current_span``); the trail view tells it from there.

Jobs log with the shared field names (the worker runs ``configure_logging``); they never log the
customer's email address or the file contents.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import random
from collections import defaultdict

import redis
from jobtrail.conventions import LOG_EVENT
from jobtrail.demo import email_provider
from jobtrail.demo.settings import DemoSettings
from opentelemetry import trace
from rq import get_current_job

logger = logging.getLogger("jobtrail.demo.jobs")
tracer = trace.get_tracer("jobtrail.demo.jobs")


def generate_report(report_id: str) -> dict[str, object]:
    """Totals per customer over a generated order book: a few seconds of honest CPU work at scale 1."""
    scale = DemoSettings.from_env().work_scale
    with tracer.start_as_current_span("load orders"):
        generator = random.Random(report_id)
        count = int(400_000 * scale) + 1
        orders = [(f"customer-{generator.randrange(500)}", generator.randrange(1, 50_000)) for _ in range(count)]
    with tracer.start_as_current_span("compute totals"):
        totals: dict[str, int] = defaultdict(int)
        for customer, cents in orders:
            totals[customer] += cents
    with tracer.start_as_current_span("render report"):
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["customer", "total"])
        for customer in sorted(totals):
            writer.writerow([customer, f"{totals[customer] / 100:.2f}"])
        digest = hashlib.sha256(out.getvalue().encode())
        for _ in range(int(300_000 * scale)):
            digest = hashlib.sha256(digest.digest())
    logger.info("report ready", extra={LOG_EVENT: "report.ready"})
    return {"report_id": report_id, "customers": len(totals), "orders": count, "checksum": digest.hexdigest()[:16]}


def send_refund_receipt(refund_id: str, email: str, amount_cents: int) -> dict[str, object]:
    """Render the receipt and hand it to the email provider (which refuses the login on the first tries)."""
    settings = DemoSettings.from_env()
    with tracer.start_as_current_span("render receipt"):
        body = f"Refund {refund_id}: {amount_cents / 100:.2f} EUR is on its way to your card."
    with tracer.start_as_current_span("send email"), redis.Redis.from_url(settings.redis_url) as connection:
        job = get_current_job()
        receipt = job.id if job is not None else refund_id
        answer = email_provider.send(connection, receipt, body, settings.email_failures)
    logger.info("receipt sent", extra={LOG_EVENT: "receipt.sent"})
    return {"refund_id": refund_id, "provider_answer": answer}


def import_files(files: list[dict[str, str]]) -> dict[str, object]:
    """Import each CSV file of refunds; a bad file fails its own step and the result says so honestly."""
    imported: list[dict[str, object]] = []
    failed: list[dict[str, str]] = []
    for item in files:
        name = item["name"]
        try:
            with tracer.start_as_current_span(f"import {name}"):
                imported.append({"file": name, "rows": _parse_refunds(item["content"])})
        except ValueError as error:
            failed.append({"file": name, "error": str(error)})
            logger.warning("file not imported", extra={LOG_EVENT: "import.file_failed"})
    return {"imported": imported, "failed": failed, "total": len(files)}


def _parse_refunds(content: str) -> int:
    """The number of refund rows; the error names the line, the step span and the result name the file."""
    rows = list(csv.DictReader(io.StringIO(content)))
    if not rows or set(rows[0]) != {"refund_id", "amount"}:
        raise ValueError("expected the columns refund_id,amount")
    for line, row in enumerate(rows, start=2):
        try:
            float(row["amount"])
        except (TypeError, ValueError):
            raise ValueError(f"line {line}: amount {row['amount']!r} is not a number") from None
    return len(rows)

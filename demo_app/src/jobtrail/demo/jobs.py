"""The demo's background jobs: real work, one child span per step (children of the attempt span).

They use the job contract's worker side (:func:`jobtrail.jobs.current_run`): the report says its stage and
progress and stops at a safe point between chunks when cancelled; the receipt checks for a cancel before it
sends; the import processes each file as an item, so the status lists the files and the outcome is honest
(``partially_succeeded`` when a file is bad).

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
import time
from collections import defaultdict

import redis
from jobtrail.conventions import LOG_EVENT
from jobtrail.demo import email_provider
from jobtrail.demo.settings import DemoSettings
from jobtrail.jobs import current_run
from opentelemetry import trace
from rq import get_current_job

logger = logging.getLogger("jobtrail.demo.jobs")
tracer = trace.get_tracer("jobtrail.demo.jobs")


REPORT_CHUNKS = 20
"""The report loads its orders in this many chunks: progress counts them, a cancel stops between two."""


def generate_report(report_id: str) -> dict[str, object]:
    """Totals per customer over a generated order book: a few seconds of honest CPU work at scale 1."""
    settings = DemoSettings.from_env()
    run = current_run()
    run.set_stage("loading")
    with tracer.start_as_current_span("load orders"):
        generator = random.Random(report_id)
        per_chunk = int(20_000 * settings.work_scale) + 1
        orders: list[tuple[str, int]] = []
        for chunk in range(REPORT_CHUNKS):
            run.check()  # a safe point: a cancelled report stops here
            orders += [
                (f"customer-{generator.randrange(500)}", generator.randrange(1, 50_000)) for _ in range(per_chunk)
            ]
            time.sleep(settings.report_seconds / REPORT_CHUNKS)
            run.set_progress(chunk + 1, REPORT_CHUNKS)
        count = len(orders)
    run.set_stage("computing")
    with tracer.start_as_current_span("compute totals"):
        totals: dict[str, int] = defaultdict(int)
        for customer, cents in orders:
            totals[customer] += cents
    run.set_stage("rendering")
    with tracer.start_as_current_span("render report"):
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["customer", "total"])
        for customer in sorted(totals):
            writer.writerow([customer, f"{totals[customer] / 100:.2f}"])
        digest = hashlib.sha256(out.getvalue().encode())
        for _ in range(int(300_000 * settings.work_scale)):
            digest = hashlib.sha256(digest.digest())
    logger.info("report ready", extra={LOG_EVENT: "report.ready"})
    return {"report_id": report_id, "customers": len(totals), "orders": count, "checksum": digest.hexdigest()[:16]}


def send_refund_receipt(refund_id: str, email: str, amount_cents: int) -> dict[str, object]:
    """Render the receipt and hand it to the email provider (which refuses the login on the first tries)."""
    settings = DemoSettings.from_env()
    with tracer.start_as_current_span("render receipt"):
        body = f"Refund {refund_id}: {amount_cents / 100:.2f} EUR is on its way to your card."
    current_run().check()  # cancelled before it went out: nothing is sent
    with tracer.start_as_current_span("send email"), redis.Redis.from_url(settings.redis_url) as connection:
        job = get_current_job()
        receipt = job.id if job is not None else refund_id
        answer = email_provider.send(connection, receipt, body, settings.email_failures)
    logger.info("receipt sent", extra={LOG_EVENT: "receipt.sent"})
    return {"refund_id": refund_id, "provider_answer": answer}


def import_files(files: list[dict[str, str]]) -> dict[str, object]:
    """Import each CSV file of refunds as one item; a bad file fails for good, the others are imported.

    The job's outcome follows from its items: ``partially_succeeded`` when some file is bad. A retry (or an
    operator's ``jobtrail jobs requeue --failed-items-only``) imports only the files not yet imported.
    """
    run = current_run()
    run.set_stage("importing")
    contents = {item["name"]: item["content"] for item in files}
    rows: dict[str, int] = {}
    for item in run.items(contents, permanent=(ValueError,)):
        with item, tracer.start_as_current_span(f"import {item.id}"):
            rows[item.id] = _parse_refunds(contents[item.id])
            item.save_checkpoint({"rows": rows[item.id]})
    imported = [
        {"file": item.id, "rows": (item.checkpoint or {}).get("rows")}
        for item in run.all_items()
        if item.state == "succeeded"
    ]
    failed = [
        {"file": item.id, "error": item.error.message}
        for item in run.all_items()
        if item.error and item.state == "failed"
    ]
    for _ in failed:
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

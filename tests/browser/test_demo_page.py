"""The demo page in headless Chromium against the real demo API: what a person reads on the card.

The API's answers that a scenario cannot provoke on demand (a refusal, a job failing with two different
errors) are played by routing those two URLs; everything else is the real API on a real server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from jobtrail.demo.api import create_app
from jobtrail.demo.settings import DemoSettings

from tests.flask.serving import serving

pytestmark = [pytest.mark.slow, pytest.mark.browser]
CARD = 'section[data-scenario="receipt"]'


@pytest.fixture
def demo_page(chromium, redis_conn, redis_url) -> Iterator:
    settings = DemoSettings(redis_url=redis_url, span_intake_forward_to="http://127.0.0.1:9/v1/traces")
    with serving(create_app(settings, redis_conn)) as base_url:
        context = chromium.new_context(permissions=["clipboard-read", "clipboard-write"])
        try:
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(base_url)
            page.wait_for_function("() => window.jobtrail !== undefined")
            yield page
        finally:
            context.close()


def finished_card(page) -> dict[str, str]:
    page.click(f'{CARD} button[data-run="receipt"]')
    page.wait_for_function("(s) => document.querySelector(s).dataset.final", arg=CARD)
    return {
        name: page.inner_text(f'{CARD} [data-field="{name}"]').strip() for name in ("state", "message", "reference")
    }


def test_a_refusal_shows_its_human_detail_and_copy_says_it_copied(demo_page) -> None:
    refusal = {
        "error": {"reason": "validation_failed", "request_id": "req_0", "detail": "refund_id must look like RF-1042"}
    }
    demo_page.route(
        "**/api/receipts",
        lambda route: route.fulfill(status=422, content_type="application/json", body=json.dumps(refusal)),
    )

    card = finished_card(demo_page)

    assert card["state"] == "refused (validation_failed)"
    assert card["message"] == (
        f"The request was refused: refund_id must look like RF-1042 (validation_failed). Reference {card['reference']}."
    )
    demo_page.click(f'{CARD} [data-field="copy"]')
    demo_page.wait_for_function("(s) => document.querySelector(`${s} [data-field=copied]`).textContent", arg=CARD)
    assert demo_page.inner_text(f'{CARD} [data-field="copied"]') == "Copied"
    assert demo_page.evaluate("navigator.clipboard.readText()") == card["reference"]


def test_a_failed_job_names_its_first_and_last_error_and_lists_one_line_per_event(demo_page) -> None:
    failed = {
        "job_id": "j1",
        "request_id": "req_0",
        "state": "failed",
        "terminal": True,
        "status_url": "/api/receipts/j1",
        "stage": None,
        "progress": None,
        "attempt": 3,
        "next_run_at": None,
        "first_error": {"type": "KeyError", "message": "'order'", "at": "2026-11-23T10:27:11.702+00:00"},
        "last_error": {"type": "ValueError", "message": "bad amount", "at": "2026-11-23T10:27:19.702+00:00"},
        "items": [],
        "events": [
            {"event": "job_created", "at": "2026-11-23T10:27:11.600+00:00"},
            {"event": "job_started", "at": "2026-11-23T10:27:11.700+00:00", "attempt": 1},
            {"event": "job_failed", "at": "2026-11-23T10:27:19.702+00:00", "attempt": 3},
        ],
    }
    demo_page.route(
        "**/api/receipts/*",
        lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(failed)),
    )

    card = finished_card(demo_page)

    assert card["state"] == "failed (attempt 3): ValueError"
    assert card["message"] == (
        "Send refund receipt did not go through: the job failed after 3 attempts "
        f"(first error: KeyError; last error: ValueError). Please contact support with reference {card['reference']}."
    )
    lines = demo_page.eval_on_selector_all(f"{CARD} [data-field=history] li", "items => items.map(i => i.textContent)")
    assert [line.split(" ", 1)[1] for line in lines] == ["accepted", "attempt 1 started", "failed"]

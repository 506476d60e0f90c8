"""``--scripted``: headless Chromium clicks through every scenario and the trail of each is printed.

Also the browser driver the end-to-end tests use, so what the tests check is what the demo shows.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from jobtrail.conventions import (
    ATTR_JOB_OUTCOME,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_UI_ACTION,
    ATTR_UI_RESULT_STATE,
    EVENT_UI_RESULT,
    OUTCOME_FAILED,
    OUTCOME_SUCCEEDED,
    UI_STATE_FAILED,
    UI_STATE_RUNNING,
    UI_STATE_SUCCEEDED,
)
from jobtrail.trail import (
    KIND_CONSUMER,
    KIND_PRODUCER,
    FileSource,
    Lookup,
    SourceError,
    TrailNotFound,
    TrailSpan,
    build_timeline,
)
from jobtrail.trail.cli import invocation

CHROMIUM_PATH = os.environ.get("JOBTRAIL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class Scenario:
    """One click of the scripted run: which card, with the email provider up or down, and how the story ends."""

    key: str
    title: str
    provider_down: bool
    expected_state: str


PLAN = (
    Scenario("report", "Generate report", False, UI_STATE_SUCCEEDED),
    Scenario("receipt", "Send refund receipt", False, UI_STATE_SUCCEEDED),
    Scenario("receipt", "Send refund receipt (email provider down for good)", True, UI_STATE_FAILED),
    Scenario("import", "Import files", False, UI_STATE_FAILED),
)
"""Every scenario once; the import ends "failed" on the page because one of its files was not imported."""


@dataclass(frozen=True)
class ActionOutcome:
    """What the page showed at the end of one action."""

    scenario: str
    request_id: str
    state: str
    message: str
    job_id: str
    history: str
    """The job's recorded state changes as the page lists them, e.g. "queued 10:14:04 → started 10:14:05 → ..."."""


def scripted_unavailable() -> str | None:
    """Why ``--scripted`` cannot run here (Playwright or Chromium missing), or None when it can."""
    if importlib.util.find_spec("playwright") is None:
        return "--scripted needs Playwright: pip install 'playwright>=1.45' (./dev demo installs it)"
    if not (os.path.isfile(CHROMIUM_PATH) or shutil.which(CHROMIUM_PATH)):
        return f"--scripted needs Chromium at {CHROMIUM_PATH} (Debian: apt-get install chromium; or JOBTRAIL_CHROMIUM)"
    return None


@contextmanager
def chromium() -> Iterator:
    """Headless Debian Chromium driven by Playwright's driver (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class DemoPage:
    """The demo page in a browser tab, driven the way a user would: clicks, then reading what it says."""

    def __init__(self, page, url: str) -> None:
        self.page = page
        page.goto(url)
        page.wait_for_function("() => window.jobtrail !== undefined")
        page.wait_for_selector("#email-provider-down[data-down]", state="attached")

    def run(self, scenario: str, timeout_s: float = 120.0) -> ActionOutcome:
        section = f'section[data-scenario="{scenario}"]'
        previous = self.page.evaluate(
            "(s) => document.querySelector(`${s} [data-field=reference]`)?.textContent ?? ''", section
        )
        self.page.click(f'{section} button[data-run="{scenario}"]')
        self.page.wait_for_function(
            """([s, previous]) => {
                const card = document.querySelector(s);
                const reference = card.querySelector('[data-field=reference]');
                return card.dataset.final && reference && reference.textContent !== previous;
            }""",
            arg=[section, previous],
            timeout=timeout_s * 1000,
        )

        def field(name: str) -> str:
            return self.page.inner_text(f'{section} [data-field="{name}"]').strip()

        state = self.page.get_attribute(section, "data-final") or ""
        return ActionOutcome(scenario, field("reference"), state, field("message"), field("job"), field("history"))

    def set_email_provider_down(self, down: bool, timeout_s: float = 30.0) -> None:
        checkbox = "#email-provider-down"
        if self.page.is_checked(checkbox) != down:
            self.page.click(checkbox)
        self.page.wait_for_selector(f'{checkbox}[data-down="{str(down).lower()}"]', timeout=timeout_s * 1000)


def trail_is_complete(spans: list[TrailSpan]) -> bool:
    """The page reported its final result and every queued job's last attempt ended for good."""
    reported = any(
        event.name == EVENT_UI_RESULT and event.attributes.get(ATTR_UI_RESULT_STATE) != UI_STATE_RUNNING
        for span in spans
        if ATTR_UI_ACTION in span.attributes
        for event in span.events
    )
    for send in (span for span in spans if span.kind == KIND_PRODUCER):
        job_id = send.attributes.get(ATTR_MESSAGING_MESSAGE_ID)
        outcomes = {
            span.attributes.get(ATTR_JOB_OUTCOME)
            for span in spans
            if span.kind == KIND_CONSUMER and span.attributes.get(ATTR_MESSAGING_MESSAGE_ID) == job_id
        }
        if not outcomes & {OUTCOME_SUCCEEDED, OUTCOME_FAILED}:
            return False
    return reported


def wait_for_trail(
    trace_file: Path, request_id: str, timeout_s: float = 60.0, settle_s: float = 0.2
) -> list[TrailSpan]:
    """Poll the processor's file until the action's trail is complete and unchanged for ``settle_s``."""
    deadline = time.monotonic() + timeout_s
    source = FileSource(str(trace_file))
    complete_count: int | None = None
    while True:
        try:
            spans = source.find(Lookup.parse(request_id)).spans
        except (TrailNotFound, SourceError):
            spans = []
        complete = bool(spans) and trail_is_complete(spans)
        if complete and len(spans) == complete_count:
            return spans
        complete_count = len(spans) if complete else None
        if time.monotonic() > deadline:
            raise TimeoutError(f"the trail of {request_id} was not complete in {trace_file} after {timeout_s:.0f} s")
        time.sleep(settle_s)


def run_scripted(url: str, trace_file: Path, out: TextIO, settle_s: float) -> bool:
    """Click through :data:`PLAN` and print each trail; True when every action ended the way its story says."""
    as_told = True
    local_zone = datetime.now().astimezone().tzinfo or timezone.utc
    with chromium() as browser:
        page = DemoPage(browser.new_page(), url)
        for scenario in PLAN:
            page.set_email_provider_down(scenario.provider_down)
            outcome = page.run(scenario.key)
            print(f'\n== {scenario.title}: {outcome.state}: "{outcome.message}"', file=out)
            if outcome.history:
                print(f"   the page listed: {outcome.history}", file=out)
            if outcome.state != scenario.expected_state:
                as_told = False
                print(f"!! expected the page to end {scenario.expected_state}", file=out)
            print(f"$ {invocation()} trail {outcome.request_id} --file {trace_file}", file=out)
            spans = wait_for_trail(trace_file, outcome.request_id, settle_s=settle_s)
            for line in build_timeline(spans, tz=local_zone).lines():
                print(f"  {line}", file=out)
            out.flush()
        page.set_email_provider_down(False)
    return as_told

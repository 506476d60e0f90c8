"""Browser fixtures: one headless Chromium per session, a fresh page per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.fixtures.browser import chromium_missing_reason, launch_chromium
from tests.flask.conftest import app, queue, run_jobs  # noqa: F401 - shared fixtures


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    reason = chromium_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()

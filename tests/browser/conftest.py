"""Browser fixtures: a fresh page per test, on the session's Chromium (``tests/fixtures/browser.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.flask.conftest import app, queue, run_jobs  # noqa: F401 - shared fixtures


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()

"""Shared fixtures: the plugins in tests/fixtures/ and one global in-memory tracer provider."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytest_plugins = ["tests.fixtures.redis_server", "tests.fixtures.otlp_receiver", "tests.fixtures.browser"]

_PROVIDER = TracerProvider()
_MEMORY_EXPORTER = InMemorySpanExporter()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_MEMORY_EXPORTER))
trace.set_tracer_provider(_PROVIDER)


@pytest.fixture
def tracer_provider() -> TracerProvider:
    """The one global SDK tracer provider of the test process."""
    return _PROVIDER


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """Reads what this test emitted in-process (cleared before and after)."""
    _MEMORY_EXPORTER.clear()
    yield _MEMORY_EXPORTER
    _MEMORY_EXPORTER.clear()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``long`` (minutes of waiting on a real job) go first, so parallel workers overlap them."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)

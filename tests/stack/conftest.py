"""The real collector and Jaeger binaries for the stack tests, and helpers to read Jaeger's api_v3.

``./dev test`` builds both (``./dev stack-tools``) and passes their paths in ``JOBTRAIL_OTELCOL_BIN`` and
``JOBTRAIL_JAEGER_BIN``. Run directly, the fixture asks ``./dev stack-tools`` itself (a cold build takes many
minutes); without Go on PATH the stack tests are skipped with that reason, never silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from jobtrail.demo.stack import ENV_JAEGER_BIN, ENV_OTELCOL_BIN, Stack, StackError, StackTools
from jobtrail.otlp.json_codec import decode_request
from jobtrail.trail.model import TrailSpan, spans_from_request

from tests.stack.stackfiles import REPO

STACK_TOOLS_TIMEOUT_S = 3600
JAEGER_WAIT_S = 60.0
JAEGER_WARNINGS = "@jaeger@warnings"
T = TypeVar("T")


@pytest.fixture(scope="session")
def stack_tools() -> StackTools:
    if not (os.environ.get(ENV_OTELCOL_BIN) and os.environ.get(ENV_JAEGER_BIN)):
        if shutil.which("go") is None:
            pytest.skip("Go is not on PATH: the real collector and Jaeger cannot be built (./dev stack-tools)")
        result = subprocess.run(
            [str(REPO / "dev"), "stack-tools"], capture_output=True, text=True, timeout=STACK_TOOLS_TIMEOUT_S
        )
        if result.returncode != 0:
            pytest.fail(f"./dev stack-tools failed:\n{result.stderr[-3000:]}")
        paths = dict(line.split("=", 1) for line in result.stdout.splitlines())
        return StackTools(Path(paths["otelcol"]), Path(paths["jaeger"]))
    try:
        return StackTools.from_env()
    except StackError as error:
        pytest.fail(str(error))


@pytest.fixture
def stack_factory(stack_tools: StackTools, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start stacks (stopped, in order, at the end of the test); their logs are printed when a test fails."""
    stacks: list[Stack] = []

    def start(name: str = "stack", **options: Any) -> Stack:
        stack = Stack(stack_tools, tmp_path / name, **options)
        stacks.append(stack)
        return stack.start()

    yield start
    for stack in stacks:
        stack.stop()


def eventually(probe: Callable[[], T | None], what: str, timeout: float = JAEGER_WAIT_S) -> T:
    """Poll ``probe`` until it returns something truthy (no sleep-and-hope: the condition is the exit)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def jaeger_json(base_url: str, path: str) -> dict[str, Any] | None:
    """One api_v3 answer as JSON; None for 404 (Jaeger's "no traces found")."""
    try:
        with urllib.request.urlopen(base_url + path, timeout=10) as response:  # noqa: S310 (127.0.0.1)
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def jaeger_spans(answer: dict[str, Any] | None) -> list[TrailSpan]:
    """The spans of one api_v3 answer, flattened (none for a 404)."""
    return spans_from_request(decode_request(json.dumps(answer["result"]))) if answer else []


def jaeger_trace(base_url: str, trace_id: str) -> list[TrailSpan]:
    """Every span Jaeger holds for ``trace_id`` (after its adjusters)."""
    return jaeger_spans(jaeger_json(base_url, f"/api/v3/traces/{trace_id}"))

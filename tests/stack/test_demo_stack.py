"""``./dev demo --stack`` end to end: Chromium clicks "Send refund receipt", the spans go through the real
collector, the jobtrail processor subprocess and the real collector again into the real Jaeger.

One demo run (``python -m jobtrail.demo --stack``, the launcher ``./dev demo --stack`` execs) serves every test
here: Jaeger's api_v3 must hold the whole action as ONE trace, and ``jobtrail trail --jaeger`` must tell it
exactly as the processor's file does.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from jobtrail.conventions import ATTR_MESSAGING_MESSAGE_ID, ATTR_REQUEST_ID, ATTR_STITCHED_ORIGINAL_TRACE_ID
from jobtrail.demo.scripted import ActionOutcome, DemoPage, trail_is_complete
from jobtrail.demo.stack import ENV_JAEGER_BIN, ENV_OTELCOL_BIN, StackTools
from jobtrail.trail import FileSource, Lookup, SourceError, TrailNotFound, TrailSpan
from jobtrail.trail.cli import DEFAULT_SERVICES
from jobtrail.trail.cli import main as trail_main
from jobtrail.trail.model import KIND_CONSUMER

from tests.demo.conftest import START_TIMEOUT_S, demo_command, demo_environment, stop_demo
from tests.demo.test_end_to_end import one_chain
from tests.fixtures.browser import chromium_missing_reason, launch_chromium
from tests.stack.conftest import JAEGER_WARNINGS, eventually, jaeger_json, jaeger_spans, jaeger_trace

pytestmark = [pytest.mark.slow, pytest.mark.stack, pytest.mark.browser]
RECEIPT_ACTION = "Send refund receipt"
SKEW_NOT_APPLIED = re.compile(r"^clock skew adjustment disabled; not applying calculated delta of -?[0-9.hmsµun]+$")
"""Jaeger's note on an attempt shorter than its send span, which it starts after (docs/processor.md);
informational: Jaeger changes no timestamp."""
ZERO_DURATION_SANITIZED = re.compile(r"^Negative duration detected, sanitizing end timestamp\. ")
"""Jaeger's note on a zero-duration span (the RQ pickup marker), whose end it moves 1 ns on ingest."""
STACK_START_TIMEOUT_S = 120
BROWSER_TIMEOUT_S = 180


@dataclass
class StackDemo:
    url: str
    jaeger_url: str
    trace_file: Path
    page_config: str
    request_id: str = ""
    job_id: str = ""
    state: str = ""


def read_until(lines: queue.Queue[str], pattern: str, timeout: float) -> re.Match[str]:
    while True:
        match = re.match(pattern, lines.get(timeout=timeout))
        if match:
            return match


@contextmanager
def receipt_clicked(url: str) -> Iterator[tuple[str, ActionOutcome]]:
    """Chromium clicks "Send refund receipt"; (the page's config, what the page showed). The page stays open until
    exit: its last spans leave in the kit's next batch. Playwright runs in a thread of its own, as its sync API
    refuses a thread where another session's browser (tests/browser's) is still open."""
    result: queue.Queue[tuple[str, ActionOutcome] | BaseException] = queue.Queue()
    done = threading.Event()

    def drive() -> None:
        try:
            with launch_chromium() as browser:
                page = browser.new_page()
                demo_page = DemoPage(page, url)
                config = page.evaluate("document.getElementById('demo-config').textContent")
                result.put((config, demo_page.run("receipt")))
                done.wait()
        except BaseException as error:  # handed over to the test's thread
            result.put(error)

    thread = threading.Thread(target=drive, name="chromium", daemon=True)
    thread.start()
    first = result.get(timeout=BROWSER_TIMEOUT_S)
    if isinstance(first, BaseException):
        raise first
    try:
        yield first
    finally:
        done.set()
        thread.join(BROWSER_TIMEOUT_S)


@pytest.fixture(scope="module")
def stack_demo(stack_tools: StackTools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackDemo]:
    """The demo with ``--stack`` in its own process; Chromium clicks "Send refund receipt" once (fails twice)."""
    reason = chromium_missing_reason()
    if reason:
        pytest.fail(reason)
    workdir = tmp_path_factory.mktemp("stack-demo")
    env = {**demo_environment(), ENV_OTELCOL_BIN: str(stack_tools.otelcol), ENV_JAEGER_BIN: str(stack_tools.jaeger)}
    with (workdir / "demo.log").open("w") as stderr:
        process = subprocess.Popen(
            demo_command(workdir / "data", "--stack"), stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        url = read_until(lines, r"jobtrail demo: (http://\S+)", STACK_START_TIMEOUT_S)[1]
        trace_file = Path(read_until(lines, r"\s+stitched traces: (\S+)", START_TIMEOUT_S)[1])
        jaeger_url = read_until(lines, r"\s+a trail: .* --jaeger (http://\S+)", START_TIMEOUT_S)[1]
        with receipt_clicked(url) as (config, outcome):
            yield StackDemo(url, jaeger_url, trace_file, config, outcome.request_id, outcome.job_id, outcome.state)
    finally:
        stop_demo(process)


def whole(spans: list[TrailSpan]) -> bool:
    """The page reported its result, every job ended, and every span's parent is there (the last poll's fetch
    span leaves the page after the action span, in the kit's next batch)."""
    ids = {span.span_id for span in spans}
    return trail_is_complete(spans) and all(not span.parent_span_id or span.parent_span_id in ids for span in spans)


def complete_in_file(demo: StackDemo) -> list[TrailSpan] | None:
    try:
        spans = FileSource(str(demo.trace_file)).find(Lookup.parse(demo.request_id)).spans
    except (TrailNotFound, SourceError):
        return None
    return spans if whole(spans) else None


@pytest.fixture(scope="module")
def in_jaeger(stack_demo: StackDemo) -> list[TrailSpan]:
    """The action's trace once Jaeger holds every span the processor's file holds.

    Polled raw (``raw_traces=true``): Jaeger 2.13's memory storage keeps whatever its adjusters add to a trace
    it serves, so reading an incomplete trace would leave a "parent span ID=… is not in the trace" warning
    behind for good (docs/processor.md).
    """

    def settled() -> str | None:
        """The trace id, once Jaeger holds exactly the spans of the whole trail in the file."""
        in_file = complete_in_file(stack_demo)
        if not in_file:
            return None
        [trace_id] = {span.trace_id for span in in_file}
        raw = jaeger_spans(jaeger_json(stack_demo.jaeger_url, f"/api/v3/traces/{trace_id}?raw_traces=true"))
        return trace_id if {span.span_id for span in raw} == {span.span_id for span in in_file} else None

    trace_id = eventually(settled, "the same whole trail in the processor's file and in Jaeger")
    return jaeger_trace(stack_demo.jaeger_url, trace_id)


def test_the_page_links_each_action_to_its_trace_in_jaegers_api(stack_demo: StackDemo) -> None:
    assert stack_demo.state == "succeeded"
    assert f'"jaegerTraceLink": "{stack_demo.jaeger_url}/api/v3/traces/{{trace_id}}"' in stack_demo.page_config


def test_jaeger_holds_the_receipt_as_one_trace(stack_demo: StackDemo, in_jaeger: list[TrailSpan]) -> None:
    """Action, fetch, Flask span, send span, the three attempts under the send span, each with its steps."""
    holding = set()
    for service in DEFAULT_SERVICES:
        query = (
            f"/api/v3/traces?query.service_name={service}&query.num_traces=100"
            "&query.start_time_min=2000-01-01T00:00:00Z&query.start_time_max=2100-01-01T00:00:00Z"
        )
        answer = jaeger_json(stack_demo.jaeger_url, query)
        assert answer is not None, f"Jaeger has no trace of {service}"
        for span in jaeger_spans(answer):
            if span.attributes.get(ATTR_REQUEST_ID) == stack_demo.request_id:
                holding.add(span.trace_id)
    assert len(holding) == 1, f"the action is split over {holding}"
    [trace_id] = holding
    spans = jaeger_trace(stack_demo.jaeger_url, trace_id)
    _action, send, attempts = one_chain(spans, RECEIPT_ACTION)
    assert len(attempts) == 3
    assert send.attributes[ATTR_MESSAGING_MESSAGE_ID] == stack_demo.job_id
    for attempt in attempts:
        original = attempt.attributes[ATTR_STITCHED_ORIGINAL_TRACE_ID]
        assert jaeger_json(stack_demo.jaeger_url, f"/api/v3/traces/{original}") is None, "no attempt left behind"
    for span in spans:
        for warning in span.attributes.get(JAEGER_WARNINGS, []):
            skew_note = span.kind == KIND_CONSUMER and SKEW_NOT_APPLIED.match(warning)
            zero_duration_note = span.end_ns - span.start_ns == 1 and ZERO_DURATION_SANITIZED.match(warning)
            assert skew_note or zero_duration_note, (span.name, warning)


def trail_lines(*args: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert trail_main(["trail", *args, "--utc"]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_trail_from_jaeger_is_the_trail_from_the_file(
    stack_demo: StackDemo, in_jaeger: list[TrailSpan], capsys: pytest.CaptureFixture[str]
) -> None:
    from_file = trail_lines(stack_demo.request_id, "--file", str(stack_demo.trace_file), capsys=capsys)
    from_jaeger = trail_lines(stack_demo.request_id, "--jaeger", stack_demo.jaeger_url, capsys=capsys)
    assert from_jaeger == from_file
    assert sum("failed: SMTPAuthenticationError; retry scheduled in" in line for line in from_jaeger) == 2
    by_job = trail_lines(stack_demo.job_id, "--jaeger", stack_demo.jaeger_url, capsys=capsys)
    assert by_job[1:] == from_file[1:], "the job id finds the same trail (only the header names the query)"
    assert by_job[0] == from_file[0].replace(stack_demo.request_id, stack_demo.job_id, 1)

"""The embedded demo as a user runs it: ``python -m jobtrail.demo`` in its own process, on free ports, fast settings."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.browser import chromium_missing_reason

START_TIMEOUT_S = 60
SCRIPTED_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60
HOLD_SECONDS = 0.5
RETRY_INTERVALS = (1, 2)
EMAIL_FAILURES = 2
REPORT_SECONDS = 2


def demo_command(data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobtrail.demo",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--hold",
        str(HOLD_SECONDS),
        "--jaeger-otlp",
        "off",
        *extra,
    ]


def demo_environment() -> dict[str, str]:
    """Short retry intervals and little report work, so the whole story takes seconds."""
    env = {
        **os.environ,
        "JOBTRAIL_DEMO_RETRY_INTERVALS": ",".join(str(seconds) for seconds in RETRY_INTERVALS),
        "JOBTRAIL_DEMO_EMAIL_FAILURES": str(EMAIL_FAILURES),
        "JOBTRAIL_DEMO_WORK_SCALE": "0.02",
        "JOBTRAIL_DEMO_REPORT_SECONDS": str(REPORT_SECONDS),
        "JOBTRAIL_JAEGER_UI_URL": "",
    }
    env.pop("REDIS_URL", None)
    return env


def json_log_lines(text: str) -> list[dict[str, object]]:
    """Every stderr line as the JSON object it must be (a line that is not one fails the test)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class PrintedAction:
    """One scenario as ``--scripted`` printed it: the page's end state and message, then the trail."""

    title: str
    state: str
    message: str
    state_shown: str = ""
    history: list[str] = field(default_factory=list)
    request_id: str = ""
    trail: list[str] = field(default_factory=list)


@dataclass
class ScriptedRun:
    returncode: int
    stdout: str
    stderr: str
    trace_file: Path
    actions: dict[str, PrintedAction]


_HEADER = re.compile(r'^== (?P<title>.+?): (?P<state>\w+): "(?P<message>.*)"$')
_COMMAND = re.compile(r"^\$ \S*jobtrail trail (?P<request_id>req_[0-9a-f]{16}) --file ")


def parse_scripted(stdout: str) -> dict[str, PrintedAction]:
    actions: dict[str, PrintedAction] = {}
    current: PrintedAction | None = None
    for line in stdout.splitlines():
        if header := _HEADER.match(line):
            current = PrintedAction(header["title"], header["state"], header["message"])
            actions[current.title] = current
        elif current is None:
            continue
        elif line.startswith("   the page's state: "):
            current.state_shown = line.removeprefix("   the page's state: ")
        elif line.startswith("   the page listed: "):
            current.history.append(line.removeprefix("   the page listed: "))
        elif command := _COMMAND.match(line):
            current.request_id = command["request_id"]
        elif line.startswith("  "):
            current.trail.append(line[2:])
    return actions


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory: pytest.TempPathFactory) -> ScriptedRun:
    """``python -m jobtrail.demo --scripted``: Chromium clicks every scenario; the demo stops and flushes everything."""
    reason = chromium_missing_reason()
    if reason:
        pytest.fail(reason)
    data_dir = tmp_path_factory.mktemp("scripted")
    result = subprocess.run(
        demo_command(data_dir, "--scripted"),
        capture_output=True,
        text=True,
        env=demo_environment(),
        timeout=SCRIPTED_TIMEOUT_S,
        check=False,
    )
    return ScriptedRun(
        result.returncode, result.stdout, result.stderr, data_dir / "traces.jsonl", parse_scripted(result.stdout)
    )


@dataclass
class RunningDemo:
    url: str
    trace_file: Path
    process: subprocess.Popen
    stderr_file: Path


@contextmanager
def run_demo(workdir: Path, *extra: str) -> Iterator[RunningDemo]:
    """The interactive demo (no browser) with ``extra`` flags: waits for the printed URL; SIGTERM on the way out."""
    stderr_file = workdir / "stderr.log"
    with stderr_file.open("w") as stderr:
        process = subprocess.Popen(
            demo_command(workdir / "data", *extra),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=demo_environment(),
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    url = None
    try:
        while url is None:
            match = re.match(r"jobtrail demo: (http://\S+)", lines.get(timeout=START_TIMEOUT_S))
            url = match.group(1) if match else None
        yield RunningDemo(url, workdir / "data" / "traces.jsonl", process, stderr_file)
    finally:
        stop_demo(process)


def stop_demo(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the demo stops its worker, processor and exporters), then SIGKILL after ``STOP_TIMEOUT_S``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def running_demo(tmp_path: Path) -> Iterator[RunningDemo]:
    with run_demo(tmp_path) as demo:
        yield demo

"""The embedded demo as a user runs it: ``python -m demo_app`` in its own process, on free ports."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo_app.scripted import DemoPage, chromium

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
RETRY_INTERVALS = (1, 2)
EMAIL_FAILURES = 2


@dataclass
class RunningDemo:
    url: str
    trace_file: Path
    hold_seconds: float
    process: subprocess.Popen
    output: list[str]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    data_dir = tmp_path_factory.mktemp("demo")
    hold_seconds = 0.5
    env = {
        **os.environ,
        "JOBTRAIL_DEMO_RETRY_INTERVALS": ",".join(str(seconds) for seconds in RETRY_INTERVALS),
        "JOBTRAIL_DEMO_EMAIL_FAILURES": str(EMAIL_FAILURES),
        "JOBTRAIL_DEMO_WORK_SCALE": "0.02",
        "JOBTRAIL_JAEGER_UI_URL": "",
    }
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "demo_app", "--port", "0", "--data-dir", str(data_dir), "--hold", str(hold_seconds),
         "--jaeger-otlp", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    url = None
    try:
        while url is None:
            line = lines.get(timeout=START_TIMEOUT_S)
            match = re.match(r"jobtrail demo: (http://\S+)", line)
            url = match.group(1) if match else None
        yield RunningDemo(url, data_dir / "traces.jsonl", hold_seconds, process, output)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def demo_page(demo: RunningDemo) -> Iterator[DemoPage]:
    with chromium() as browser:
        page = browser.new_page()
        yield DemoPage(page, demo.url)
        page.close()

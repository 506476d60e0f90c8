"""The processor as a real subprocess (``python -m jobtrail.processor``): ports, metrics, RSS and threads, kill."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


class ProcessorProcess:
    """Starts on ephemeral 127.0.0.1 ports; its log goes to a file (a full pipe would block it)."""

    def __init__(self, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        env = {key: value for key, value in os.environ.items() if not key.startswith("JOBTRAIL_PROCESSOR_")}
        command = [sys.executable, "-m", "jobtrail.processor", "--listen-grpc", "127.0.0.1:0"]
        command += ["--listen-http", "127.0.0.1:0", *args]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(command, stderr=log, stdout=subprocess.DEVNULL, env=env)
        self.pid = self.process.pid
        self.grpc_port, self.http_port = self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = re.findall(r"ready grpc=(\d+) http=(\d+)", self.log_path.read_text(errors="replace"))
            if ready:
                grpc_port, http_port = ready[-1]
                return int(grpc_port), int(http_port)
            if self.process.poll() is not None:
                pytest.fail(f"the processor exited with {self.process.returncode}: {self.log()}")
            time.sleep(0.05)
        pytest.fail(f"the processor never said it was ready: {self.log()}")

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def metric(self, name: str, **labels: str) -> float:
        """One series from ``/metrics`` (the sum over every series of ``name`` without labels)."""
        with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=30) as response:
            text = response.read().decode("utf-8")
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if match and all(f'{key}="{value}"' in (match.group(1) or "") for key, value in labels.items()):
                total += float(match.group(2))
        return total

    def health(self) -> int:
        try:
            with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def status(self, field: str) -> int:
        """A number from /proc/PID/status: ``VmRSS`` (KiB) or ``Threads``."""
        text = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+)", text, re.M).group(1))

    def terminate(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> int:
        self.process.kill()
        return self.process.wait(60)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(60)


def post_protobuf(port: int, body: bytes) -> int:
    """POST one OTLP/protobuf body to the processor's HTTP receiver; the answer's status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()

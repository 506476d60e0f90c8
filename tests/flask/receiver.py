"""A real OTLP/HTTP receiver on 127.0.0.1:0 that records what it is sent (JSON bodies decoded)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingReceiver:
    """Answers every POST with ``status``/``answer`` (plus ``headers``); ``deliveries`` holds what arrived."""

    status: int = 200
    answer: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def record(self, delivery: Delivery) -> None:
        with self._arrived:
            self.deliveries.append(delivery)
            self._arrived.notify_all()

    def wait_for(self, predicate, timeout_s: float = 60.0) -> None:
        """Block until ``predicate(deliveries)`` holds; fail the test after a generous bound."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: predicate(self.deliveries), timeout=timeout_s):
                raise AssertionError(f"receiver never got what the test waited for ({len(self.deliveries)} deliveries)")

    def json_spans(self) -> list[dict]:
        """Every span of every OTLP/JSON delivery, each with its resource's service.name as ``service``."""
        spans = []
        for delivery in self.deliveries:
            for resource_spans in json.loads(delivery.body).get("resourceSpans", []):
                resource = {a["key"]: a["value"] for a in resource_spans.get("resource", {}).get("attributes", [])}
                service = resource.get("service.name", {}).get("stringValue")
                for scope_spans in resource_spans.get("scopeSpans", []):
                    spans.extend({**span, "service": service} for span in scope_spans.get("spans", []))
        return spans


def start_receiver(receiver: RecordingReceiver) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``receiver`` in a thread; returns the server and its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            receiver.record(Delivery(self.path, dict(self.headers.items()), self.rfile.read(length)))
            self.send_response(receiver.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(receiver.answer)))
            for name, value in receiver.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(receiver.answer)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            """Quiet: the tests read deliveries, not access logs."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), name="otlp-receiver", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"

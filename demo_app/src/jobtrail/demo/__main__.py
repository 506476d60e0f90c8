"""``python -m jobtrail.demo`` / ``jobtrail-demo``: the embedded demo (default), or one part of the compose stack.

    jobtrail-demo                 # embedded: Redis, processor, API + page, worker; prints the URL
    jobtrail-demo --scripted      # the same, then headless Chromium clicks every scenario; prints each trail
    jobtrail-demo --stack         # the real collector, a processor subprocess and Jaeger instead (./dev demo --stack)
    jobtrail-demo api             # only the API (docker-compose.yml), settings from the environment
    jobtrail-demo worker          # only the worker with the scheduler
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import redis
from jobtrail.demo.api import create_app
from jobtrail.demo.embedded import EmbeddedDemo
from jobtrail.demo.scripted import run_scripted, scripted_unavailable
from jobtrail.demo.settings import API_SERVICE, DemoSettings
from jobtrail.demo.stack import Stack, StackError, StackTools
from jobtrail.demo.telemetry import start_telemetry
from jobtrail.demo.worker import run_worker
from jobtrail.trail.cli import invocation, trail_command
from werkzeug.serving import make_server

DEFAULT_DATA_DIR = "var/jobtrail"
BROWSER_EXPORT_DELAY_S = 1.5
"""The page's span batches leave about once a second; a trail is printed once it stopped changing this long."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobtrail-demo", description="The jobtrail demo: one user action, one trace.")
    parser.add_argument("--host", default="127.0.0.1", help="address the API binds (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="API port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help=f"Redis file and traces.jsonl (default {DEFAULT_DATA_DIR})"
    )
    parser.add_argument("--hold", type=float, default=2.0, help="processor hold window in seconds (default 2)")
    parser.add_argument(
        "--jaeger-otlp",
        default="127.0.0.1:4317",
        help="also export stitched traces here when it answers (default 127.0.0.1:4317; 'off' to never try)",
    )
    parser.add_argument("--jaeger-ui", default="http://127.0.0.1:16686", help="Jaeger UI for the page's trace links")
    parser.add_argument("--scripted", action="store_true", help="drive every scenario in headless Chromium, then exit")
    parser.add_argument(
        "--stack",
        action="store_true",
        help="run the real OpenTelemetry Collector, a processor subprocess and Jaeger v2 (the binaries in "
        "JOBTRAIL_OTELCOL_BIN / JOBTRAIL_JAEGER_BIN; `./dev demo --stack` builds them) instead of the in-process "
        "processor",
    )
    commands = parser.add_subparsers(dest="command", metavar="{api,worker}")
    api = commands.add_parser("api", help="run only the API (settings from REDIS_URL, OTEL_EXPORTER_OTLP_ENDPOINT...)")
    api.add_argument("--host", dest="api_host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    api.add_argument("--port", dest="api_port", type=int, default=8000, help="port (default 8000)")
    commands.add_parser("worker", help="run only the worker, with the scheduler")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        settings = DemoSettings.from_env()
    except ValueError as error:
        print(f"jobtrail-demo: {error}", file=sys.stderr)
        return 2
    if args.command == "worker":
        run_worker(settings)
        return 0
    if args.command == "api":
        return _run_api(settings, args.api_host, args.api_port)
    return _run_embedded(settings, args)


def _run_api(settings: DemoSettings, host: str, port: int) -> int:
    provider = start_telemetry(API_SERVICE, settings.otlp_endpoint)
    server = make_server(host, port, create_app(settings, redis.Redis.from_url(settings.redis_url)), threaded=True)
    stop = _stop_on_signals()
    threading.Thread(target=server.serve_forever, name="demo-api", daemon=True).start()
    print(f"jobtrail demo API: http://{host}:{server.server_port}/", flush=True)
    stop.wait()
    server.shutdown()
    provider.shutdown()
    return 0


def _run_embedded(settings: DemoSettings, args: argparse.Namespace) -> int:
    unavailable = scripted_unavailable() if args.scripted else None
    if unavailable:
        print(f"jobtrail-demo: {unavailable}", file=sys.stderr)
        return 2
    jaeger_otlp = None if args.jaeger_otlp in ("", "off") else args.jaeger_otlp
    stack = None
    if args.stack:
        try:
            tools = StackTools.from_env()
        except StackError as error:
            print(f"jobtrail-demo: {error}", file=sys.stderr)
            return 2
        stack = Stack(tools, Path(args.data_dir).resolve() / "stack", hold_seconds=args.hold)
    demo = EmbeddedDemo(
        Path(args.data_dir),
        host=args.host,
        port=args.port,
        hold_seconds=args.hold,
        jaeger_otlp=jaeger_otlp,
        jaeger_ui=args.jaeger_ui,
        settings=settings,
        stack=stack,
    )
    stop = _stop_on_signals()
    try:
        demo.start()
        print(f"jobtrail demo: {demo.url}", flush=True)
        print(f"  stitched traces: {demo.trace_file}", flush=True)
        print(f"  a trail:         {trail_command(demo.trace_file)}", flush=True)
        if stack is not None:
            print(f"  Jaeger:          {stack.jaeger.url}/api/v3/traces/<trace id>", flush=True)
            print("                   (its UI page is a placeholder: built without the UI's assets; the API is whole)")
            print(f"  a trail:         {invocation()} trail <reference> --jaeger {stack.jaeger.url}", flush=True)
            print(f"  stack logs:      {stack.workdir}", flush=True)
        elif demo.settings.jaeger_ui_url:
            print(f"  Jaeger:          {demo.settings.jaeger_ui_url}", flush=True)
        if args.scripted:
            as_told = run_scripted(demo.url, demo.trace_file, sys.stdout, settle_s=args.hold + BROWSER_EXPORT_DELAY_S)
            return 0 if as_told else 1
        print("Ctrl-C stops the demo (every span is flushed first).", flush=True)
        stop.wait()
        return 0
    finally:
        demo.stop()


def _stop_on_signals() -> threading.Event:
    """SIGTERM and SIGINT set the event; the caller shuts down in order (nothing is lost)."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    return stop


if __name__ == "__main__":
    sys.exit(main())

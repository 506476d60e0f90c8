"""``jobtrail-processor`` / ``python -m jobtrail.processor``: run the stitching processor until SIGTERM/SIGINT.

On the signal it stops receiving, forwards everything it holds and drains its exporters before exiting.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from jobtrail.processor.config import STITCH_RULES, ConfigError, load_config
from jobtrail.processor.pipeline import Pipeline


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobtrail-processor",
        description="OTLP processor that stitches linked RQ job attempts into the trace that enqueued them.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file with ProcessorConfig settings")
    parser.add_argument("--listen-grpc", metavar="HOST:PORT", help="OTLP/gRPC listen address ('off' to disable)")
    parser.add_argument("--listen-http", metavar="HOST:PORT", help="OTLP/HTTP listen address ('off' to disable)")
    parser.add_argument(
        "--export-to",
        metavar="URL",
        action="append",
        help="next hop: grpc://host:port, http://host:port[/v1/traces] or file:///abs/path.jsonl (repeatable)",
    )
    parser.add_argument("--hold", metavar="SECONDS", type=float, help="hold window for spans whose root is unknown")
    parser.add_argument(
        "--queue-dir",
        metavar="DIR",
        help="keep the export queues on disk here: what was acknowledged survives a crash (absolute path)",
    )
    parser.add_argument("--stitch-rule", choices=STITCH_RULES, help="which spans count as attempt roots")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default INFO)",
    )
    return parser


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young collections (CPython's default is 700)."""


def tune_gc() -> None:
    """Collect less often: every request makes a few thousand short-lived objects (span wrappers, ids, lists)
    that reference counting frees, so the default threshold runs a young collection several times per request for
    nothing. What exists at startup is frozen out of the collections altogether."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(
            args.config,
            overrides={
                "grpc_listen": args.listen_grpc,
                "http_listen": args.listen_http,
                "export_to": args.export_to,
                "hold_seconds": args.hold,
                "stitch_rule": args.stitch_rule,
                "queue_dir": args.queue_dir,
            },
        )
        pipeline = Pipeline(config)
    except (ConfigError, OSError) as error:
        print(f"jobtrail-processor: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    pipeline.start()
    tune_gc()
    print(f"jobtrail-processor ready grpc={pipeline.grpc_port} http={pipeline.http_port}", file=sys.stderr, flush=True)
    stop.wait()
    pipeline.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

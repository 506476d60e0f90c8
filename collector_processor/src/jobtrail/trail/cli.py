"""``jobtrail trail <request id | trace id | job id>``: support's view of one user action, in plain words.

Reads the processor's local file (the embedded demo's default) or Jaeger v2's query API, prints the
timeline and the first broken step; ``--json`` prints the same as one JSON document.
Exit codes: 0 found, 1 nothing holds the identifier, 2 the source cannot be read or the input is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from jobtrail.trail.sources import FileSource, FirstSource, JaegerSource, Lookup, SourceError, TrailNotFound
from jobtrail.trail.timeline import build_timeline

DEFAULT_TRACE_FILE = "var/jobtrail/traces.jsonl"
"""Where the embedded demo's processor writes stitched traces (relative to the working directory)."""
DEFAULT_SERVICES = ("jobtrail-demo-api", "jobtrail-demo-worker")
"""The services searched in Jaeger by default: the demo's API and worker."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobtrail", description="jobtrail tools for support and developers.")
    commands = parser.add_subparsers(dest="command", required=True)
    trail = commands.add_parser(
        "trail",
        help="print the timeline of one user action",
        description="Print the plain-language timeline of one user action and name the first broken step.",
    )
    trail.add_argument("identifier", help="a request id (req_...), a trace id (32 hex) or a job id")
    trail.add_argument(
        "--file",
        metavar="PATH.jsonl",
        help=f"the processor's OTLP/JSON file output (default {DEFAULT_TRACE_FILE}); with --jaeger, read when "
        "Jaeger fails or lacks the trail",
    )
    trail.add_argument("--jaeger", metavar="URL", help="Jaeger v2 query base URL, e.g. http://127.0.0.1:16686")
    trail.add_argument(
        "--service",
        action="append",
        metavar="NAME",
        help=f"service to search in Jaeger (repeatable; default {', '.join(DEFAULT_SERVICES)})",
    )
    trail.add_argument("--lookback-hours", type=float, default=24.0, help="how far back Jaeger searches (default 24)")
    trail.add_argument("--utc", action="store_true", help="print times in UTC instead of local time")
    trail.add_argument("--json", action="store_true", help="print the timeline as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        lookup = Lookup.parse(args.identifier)
    except ValueError as error:
        print(f"jobtrail: {error}", file=sys.stderr)
        return 2
    source: FileSource | JaegerSource | FirstSource
    if args.jaeger:
        source = JaegerSource(args.jaeger, args.service or DEFAULT_SERVICES, timedelta(hours=args.lookback_hours))
        if args.file:
            source = FirstSource([source, FileSource(args.file)])
    else:
        source = FileSource(args.file or DEFAULT_TRACE_FILE)
    try:
        found = source.find(lookup)
    except TrailNotFound as error:
        print(f"jobtrail: {error}", file=sys.stderr)
        return 1
    except SourceError as error:
        print(f"jobtrail: {error}", file=sys.stderr)
        return 2
    for warning in found.warnings:
        print(f"jobtrail: warning: {warning}", file=sys.stderr)
    local_zone = datetime.now().astimezone().tzinfo or timezone.utc
    timeline = build_timeline(found.spans, tz=timezone.utc if args.utc else local_zone)
    if args.json:
        print(json.dumps({"query": args.identifier, **timeline.to_dict()}, indent=2))
    else:
        print(f"trail of {args.identifier} (trace {', '.join(timeline.trace_ids)})")
        for line in timeline.lines():
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

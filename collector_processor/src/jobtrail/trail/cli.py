"""``jobtrail trail <request id | trace id | job id>``: support's view of one user action, in plain words.

Reads the processor's local file or Jaeger v2's query API, prints the timeline and the first broken step;
``--json`` prints the same as one JSON document, found or not.

Which file, when ``--file`` is not given: ``$JOBTRAIL_TRACE_FILE`` when set; otherwise the embedded demo's
``var/jobtrail/traces.jsonl`` under the working directory, then under the checkout whose virtualenv runs this
command (so ``.venv/bin/jobtrail`` finds the demo's file from any folder). When none exists, the message
names every place it looked.

Exit codes: 0 found, 1 nothing holds the identifier, 2 the source cannot be read or the input is wrong
(``--json`` prints a document in every case, ``"found": false`` with an ``error`` when not found).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from jobtrail.trail.sources import (
    FileSource,
    FirstSource,
    FoundTrail,
    JaegerSource,
    Lookup,
    SourceError,
    TrailNotFound,
)
from jobtrail.trail.timeline import OVERDUE_AFTER, build_timeline

EXIT_FOUND = 0
EXIT_NOT_FOUND = 1
EXIT_ERROR = 2
TRACE_FILE_ENV = "JOBTRAIL_TRACE_FILE"
"""Where the processor's file export writes (its ``file://`` export path), for support machines that know it."""
DEMO_TRACE_FILE = Path("var", "jobtrail", "traces.jsonl")
"""Where the embedded demo's processor writes stitched traces (its default data dir), relative to a checkout."""
DEFAULT_SERVICES = ("jobtrail-demo-api", "jobtrail-demo-worker")
"""The services searched in Jaeger by default: the demo's API and worker."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobtrail", description="jobtrail tools for support and developers.")
    commands = parser.add_subparsers(dest="command", required=True)
    trail = commands.add_parser(
        "trail",
        help="print the timeline of one user action",
        description="Print the plain-language timeline of one user action and name the first broken step. "
        "Exit codes: 0 found, 1 not found, 2 the source cannot be read or the input is wrong.",
    )
    trail.add_argument("identifier", help="a request id (req_...), a trace id or job id (32 hex), or a job id")
    trail.add_argument(
        "--file",
        metavar="PATH.jsonl",
        help=f"the processor's OTLP/JSON file output (default ${TRACE_FILE_ENV}, else the demo's {DEMO_TRACE_FILE}); "
        "with --jaeger, read when Jaeger fails or lacks the trail",
    )
    trail.add_argument("--jaeger", metavar="URL", help="Jaeger v2 query base URL, e.g. http://127.0.0.1:16686")
    trail.add_argument(
        "--service",
        action="append",
        metavar="NAME",
        help=f"service to search in Jaeger (repeatable; default {', '.join(DEFAULT_SERVICES)})",
    )
    trail.add_argument("--lookback-hours", type=float, default=24.0, help="how far back Jaeger searches (default 24)")
    trail.add_argument(
        "--overdue-after",
        type=float,
        default=OVERDUE_AFTER.total_seconds() / 60,
        metavar="MINUTES",
        help=f"call a due retry or a waiting job overdue after this long (default {OVERDUE_AFTER.seconds // 60})",
    )
    trail.add_argument("--utc", action="store_true", help="print times in UTC instead of local time")
    trail.add_argument("--json", action="store_true", help="print one JSON document (also when nothing is found)")
    return parser


def invocation() -> str:
    """How to run this environment's ``jobtrail`` from here: the bare name when PATH finds this very script,
    else its path (relative when under the working directory, e.g. ``.venv/bin/jobtrail`` in a checkout)."""
    script = Path(sys.executable).with_name("jobtrail")
    on_path = shutil.which("jobtrail")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "jobtrail"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def trail_command(trace_file: Path) -> str:
    """The command line that shows a trail from ``trace_file``: ``--file`` only when the defaults would miss it."""
    found_anyway = trace_file.absolute() in trace_file_candidates()
    return f"{invocation()} trail <reference>" + ("" if found_anyway else f" --file {trace_file}")


def trace_file_candidates() -> list[Path]:
    """Where to look for the processor's file when ``--file`` is not given, in order."""
    given = os.environ.get(TRACE_FILE_ENV)
    if given:
        return [Path(given)]
    candidates = [Path.cwd() / DEMO_TRACE_FILE, Path(sys.prefix).resolve().parent / DEMO_TRACE_FILE]
    return list(dict.fromkeys(path.absolute() for path in candidates))


def default_file_source() -> FileSource:
    """The first candidate that holds a trace file (or its rotated backups); a clear error naming each place."""
    candidates = trace_file_candidates()
    for path in candidates:
        source = FileSource(str(path))
        if source.files():
            return source
    looked = ", ".join(str(path) for path in candidates)
    how = f"pass --file PATH or set {TRACE_FILE_ENV} to the processor's file export path"
    raise SourceError(f"no trace file found (looked in {looked}); {how}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    answer: dict[str, Any] = {"query": args.identifier}
    try:
        lookup = Lookup.parse(args.identifier)
        answer["looked_up_as"] = list(lookup.kinds)
        source: FileSource | JaegerSource | FirstSource
        if args.jaeger:
            jaeger = JaegerSource(args.jaeger, args.service or DEFAULT_SERVICES, timedelta(hours=args.lookback_hours))
            source = FirstSource([jaeger, FileSource(args.file)]) if args.file else jaeger
            answer["source"] = jaeger.base_url
        else:
            source = FileSource(args.file) if args.file else default_file_source()
            answer["source"] = source.path
        found = source.find(lookup)
    except TrailNotFound as error:
        return _fail(args.json, answer, str(error), EXIT_NOT_FOUND)
    except (SourceError, ValueError) as error:
        return _fail(args.json, answer, str(error), EXIT_ERROR)
    _print_trail(args, answer, found)
    return EXIT_FOUND


def _print_trail(args: argparse.Namespace, answer: dict[str, Any], found: FoundTrail) -> None:
    for warning in found.warnings:
        print(f"jobtrail: warning: {warning}", file=sys.stderr)
    local_zone = datetime.now().astimezone().tzinfo or timezone.utc
    timeline = build_timeline(
        found.spans,
        tz=timezone.utc if args.utc else local_zone,
        now=datetime.now(timezone.utc),
        overdue_after=timedelta(minutes=args.overdue_after),
    )
    if args.json:
        print(json.dumps({**answer, "found": True, "warnings": found.warnings, **timeline.to_dict()}, indent=2))
        return
    print(f"trail of {args.identifier} (trace {', '.join(timeline.trace_ids)})")
    for line in timeline.lines():
        print(f"  {line}")


def _fail(as_json: bool, answer: dict[str, Any], message: str, code: int) -> int:
    if as_json:
        print(json.dumps({**answer, "found": False, "error": message}, indent=2))
    else:
        print(f"jobtrail: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Where the trail view finds spans: the processor's local OTLP/JSON file, or Jaeger v2's api_v3.

Both answer the same question: every span of every trace that holds the identifier (a request id, a
trace id, or a job id). Whole traces are returned, so an unstitched trail (attempts still in their own
traces) is found too, through the request id the attempt spans carry.
"""

from __future__ import annotations

import glob
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from jobtrail.conventions import (
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_REQUEST_ID,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    REQUEST_ID_PATTERN,
)
from jobtrail.otlp.json_codec import OtlpDecodeError, decode_request
from jobtrail.trail.model import TrailSpan, spans_from_request

TRACE_ID_PATTERN = re.compile(r"^[0-9a-fA-F]{32}$")
LOOKUP_REQUEST_ID = "request_id"
LOOKUP_TRACE_ID = "trace_id"
LOOKUP_JOB_ID = "job_id"
JAEGER_SEARCH_DEPTH = 100
"""Traces asked of Jaeger per service search (2.19's own default); memory storage refuses more than it keeps."""


class TrailNotFound(LookupError):
    """No span anywhere in the source holds the identifier."""


class SourceError(RuntimeError):
    """The source cannot be read (missing file, Jaeger unreachable or answering nonsense)."""


_REQUEST_ID_ANY_CASE = re.compile(REQUEST_ID_PATTERN.pattern, re.IGNORECASE)


@dataclass(frozen=True)
class Lookup:
    """What support typed, and what it may be: a request id, a trace id, a job id.

    Ids are matched without regard to case (support reads them off screens and tickets). A 32-hex value is
    tried as a trace id and as a job id: ``JobContract`` makes 32-hex job ids from Idempotency-Keys.
    """

    kinds: tuple[str, ...]
    value: str

    @classmethod
    def parse(cls, identifier: str) -> Lookup:
        identifier = identifier.strip()
        if not identifier:
            raise ValueError("give a request id (req_...), a trace id (32 hex characters) or a job id")
        if _REQUEST_ID_ANY_CASE.match(identifier):
            return cls((LOOKUP_REQUEST_ID,), identifier.lower())
        if TRACE_ID_PATTERN.match(identifier):
            return cls((LOOKUP_TRACE_ID, LOOKUP_JOB_ID), identifier.lower())
        return cls((LOOKUP_JOB_ID,), identifier)

    def matches(self, span: TrailSpan) -> bool:
        wanted = self.value.lower()
        if LOOKUP_TRACE_ID in self.kinds and wanted in (
            span.trace_id,
            str(span.attributes.get(ATTR_STITCHED_ORIGINAL_TRACE_ID, "")).lower(),
        ):
            return True
        return any(
            str(span.attributes.get(SEARCH_ATTRIBUTES[kind], "")).lower() == wanted
            for kind in self.kinds
            if kind != LOOKUP_TRACE_ID
        )

    @property
    def search_attributes(self) -> list[str]:
        """The span attributes that may hold this identifier, most specific first."""
        return [SEARCH_ATTRIBUTES[kind] for kind in self.kinds]

    def describe(self) -> str:
        """What the identifier was taken for, in words: "request id", "trace id or job id"."""
        return " or ".join(kind.replace("_", " ") for kind in self.kinds)


SEARCH_ATTRIBUTES = {
    LOOKUP_REQUEST_ID: ATTR_REQUEST_ID,
    LOOKUP_TRACE_ID: ATTR_STITCHED_ORIGINAL_TRACE_ID,
    LOOKUP_JOB_ID: ATTR_MESSAGING_MESSAGE_ID,
}
"""Which span attribute holds each kind of identifier (a trace id: the one a stitched span came from)."""


@dataclass
class FoundTrail:
    spans: list[TrailSpan]
    warnings: list[str] = field(default_factory=list)


def unique_spans(spans: Iterable[TrailSpan]) -> list[TrailSpan]:
    """Drop repeats (exporters deliver at least once), keeping the first copy of each span."""
    seen: dict[tuple[str, str], TrailSpan] = {}
    for span in spans:
        seen.setdefault((span.trace_id, span.span_id), span)
    return list(seen.values())


class FileSource:
    """The processor's file exporter output: one OTLP/JSON request per line, rotated to ``.1``, ``.2``, ..."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __str__(self) -> str:
        return f"the file {self.path}"

    def files(self) -> list[str]:
        """The live file and its rotated backups, oldest first."""
        backups = [name for name in glob.glob(glob.escape(self.path) + ".*") if name.rpartition(".")[2].isdigit()]
        backups.sort(key=lambda name: int(name.rpartition(".")[2]), reverse=True)
        return [*backups, self.path] if os.path.exists(self.path) else backups

    def find(self, lookup: Lookup) -> FoundTrail:
        files = self.files()
        if not files:
            raise SourceError(f"no trace file at {self.path} (is the demo or the processor's file export running?)")
        warnings: list[str] = []
        needle = lookup.value.lower()
        trace_ids = {
            span.trace_id
            for span in self._spans(files, lambda line: needle in line.lower(), warnings)
            if lookup.matches(span)
        }
        if not trace_ids:
            raise TrailNotFound(f"nothing in {', '.join(files)} holds {lookup.describe()} {lookup.value}")
        spans = [
            span
            for span in self._spans(files, lambda line: any(trace_id in line for trace_id in trace_ids), [])
            if span.trace_id in trace_ids
        ]
        return FoundTrail(unique_spans(spans), warnings)

    @staticmethod
    def _spans(files: Sequence[str], wanted: Callable[[str], bool], warnings: list[str]) -> Iterator[TrailSpan]:
        """Decode only the lines ``wanted`` keeps (a cheap text check first); report lines that do not decode."""
        for name in files:
            try:
                with open(name, encoding="utf-8", errors="replace") as handle:
                    for number, line in enumerate(handle, start=1):
                        if not line.strip() or not wanted(line):
                            continue
                        try:
                            request = decode_request(line)
                        except OtlpDecodeError as error:
                            warnings.append(f"{name}:{number} skipped: {error}")
                            continue
                        yield from spans_from_request(request)
            except OSError as error:
                raise SourceError(f"cannot read {name}: {error}") from None


JAEGER_VERSION = "2.13.0"
"""The Jaeger the stack runs: the image docker-compose.yml pins and the binary ``./dev stack-tools`` builds
(tests keep all three equal). It is the newest Jaeger the Go module proxy serves here; it reads only the
snake_case parameters, takes the search depth only from ``query.num_traces`` and ignores ``query.attributes``.
"""


class JaegerSource:
    """Jaeger v2's query API: ``GET /api/v3/traces/{id}`` and the search ``GET /api/v3/traces``.

    The search needs a service name and a time window; the trail searches each of ``services`` so that a
    trail whose attempts were never stitched (they live in the worker's own traces) is still found whole.
    Jaeger before 2.19 ignores ``query.attributes`` and answers the newest ``depth`` traces of the service,
    which :meth:`find` filters itself. Only api_v3 is used: the UI's internal JSON search
    (``GET /api/traces?service=...&tags=...``) is not a public API.
    """

    def __init__(
        self,
        base_url: str,
        services: Sequence[str],
        lookback: timedelta = timedelta(hours=24),
        timeout: float = 10.0,
        now: datetime | None = None,
        depth: int = JAEGER_SEARCH_DEPTH,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.services = list(services)
        self.lookback = lookback
        self.timeout = timeout
        self.depth = depth
        self._now = now

    def __str__(self) -> str:
        return f"Jaeger at {self.base_url}"

    def find(self, lookup: Lookup) -> FoundTrail:
        spans: list[TrailSpan] = []
        warnings: list[str] = []
        if LOOKUP_TRACE_ID in lookup.kinds:
            spans = self._get(f"/api/v3/traces/{lookup.value}")
        if not spans:
            for service in self.services:
                for attribute in lookup.search_attributes:
                    answer = self._get(self.search_url(service, lookup, attribute))
                    spans.extend(answer)
                    if len({span.trace_id for span in answer}) >= self.depth:
                        warnings.append(
                            f"Jaeger answered {self.depth} traces of {service} (the search depth): older ones were "
                            "not searched; a shorter --lookback-hours narrows the window"
                        )
        matching_traces = {span.trace_id for span in spans if lookup.matches(span)}
        spans = [span for span in spans if span.trace_id in matching_traces]
        if not spans:
            missing = f"Jaeger at {self.base_url} has no trace holding {lookup.describe()} {lookup.value}"
            raise TrailNotFound(" ".join([missing, *dict.fromkeys(warnings)]))
        return FoundTrail(unique_spans(spans), list(dict.fromkeys(warnings)))

    def search_url(self, service: str, lookup: Lookup, attribute: str | None = None) -> str:
        """The api_v3 search for one service, attributes as one JSON object of strings.

        ``attribute``: which of the lookup's attributes to search (its first by default; a 32-hex value is
        searched once as an original trace id and once as a job id).
        Each parameter goes in Jaeger's canonical camelCase (2.19 on) and in the snake_case spelling older
        releases read (still accepted, deprecated, in 2.20). The depth goes a third time as
        ``query.num_traces``: before 2.19 it is the only name read, and without it the memory storage
        answers 500 for every search.
        """
        now = self._now or datetime.now(timezone.utc)
        values = {
            ("serviceName", "service_name"): service,
            ("startTimeMin", "start_time_min"): _rfc3339(now - self.lookback),
            ("startTimeMax", "start_time_max"): _rfc3339(now),
            ("searchDepth", "search_depth", "num_traces"): str(self.depth),
        }
        query = [(f"query.{name}", value) for names, value in values.items() for name in names]
        query.append(("query.attributes", json.dumps({attribute or lookup.search_attributes[0]: lookup.value})))
        return f"/api/v3/traces?{urllib.parse.urlencode(query)}"

    def _get(self, path: str) -> list[TrailSpan]:
        """The spans of one api_v3 answer; a 404 ("no traces found") is an empty answer."""
        url = self.base_url + path
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310 (URL given by the user)
                body = response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            detail = error.read(500).decode("utf-8", "replace")
            raise SourceError(f"Jaeger answered {error.code} for {url}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise SourceError(f"cannot reach Jaeger at {self.base_url}: {error}") from None
        try:
            result = json.loads(body)["result"]
            return spans_from_request(decode_request(json.dumps(result)))
        except (ValueError, KeyError, TypeError, OtlpDecodeError) as error:
            raise SourceError(f"Jaeger's answer for {url} is not an api_v3 trace result: {error}") from None


class FirstSource:
    """Several sources in order (e.g. Jaeger, then the processor's file): the first that finds the trail wins.

    A source that fails (unreachable, 5xx, unreadable) or does not hold the trail is named in a warning and the
    next one is asked; when none finds it, a failure outranks "not found", so a broken Jaeger is never
    reported as a missing trail.
    """

    def __init__(self, sources: Sequence[FileSource | JaegerSource]) -> None:
        self.sources = list(sources)

    def find(self, lookup: Lookup) -> FoundTrail:
        failures: list[str] = []
        missing: list[str] = []
        for source in self.sources:
            try:
                found = source.find(lookup)
            except SourceError as error:
                failures.append(str(error))
                continue
            except TrailNotFound as error:
                missing.append(str(error))
                continue
            notes = [f"{note}; used {source} instead" for note in failures + missing]
            return FoundTrail(found.spans, notes + found.warnings)
        if failures:
            raise SourceError("; ".join(failures + missing))
        raise TrailNotFound("; ".join(missing))


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

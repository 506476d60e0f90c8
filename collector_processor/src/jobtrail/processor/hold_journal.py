"""With ``queue_dir``: the spans a request left in the hold store, on disk before the sender gets its answer.

The export queues on disk cover every span that went out; the spans held back (children waiting for their root)
are in memory only. So, for each request that held spans, the held part (each span with its resource and scope)
is written here, and it is replayed through the stitcher after a crash. A held span leaves the store at the
latest ``hold_seconds`` after it came (the window counts from its trace's first span), and the ticker forwards
what expired into the export queues, on disk too; so after a tick at ``now``, every record older than
``now - hold_seconds`` is committed. Spans released earlier (their root came) may be replayed once more after a
crash: at-least-once, never lost.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import NamedTuple

from jobtrail.processor.exporters.disk_queue import DiskQueue
from jobtrail.processor.view import TraceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_TRACE_ID_BYTES, _SPAN_ID_BYTES = 16, 8
HELD_JOURNAL_DIR = "held"
"""The journal's subdirectory of ``queue_dir`` (the exporters' queues sit beside it, named by their URL)."""
logger = logging.getLogger("jobtrail.processor.hold_journal")


class Incoming(NamedTuple):
    """A request as it came, taken before the stitcher changes it in place."""

    raw: bytes
    span_ids: list[bytes]


class HoldJournal:
    """Held parts of requests, committed by age (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        self._disk = DiskQueue(directory)
        self._pending: deque[tuple[int, float]] = deque()
        self.error: str | None = None
        """Why the last write failed (the spans stay held in memory); None once a write succeeds."""

    def replay(self, now: float) -> list[ExportTraceServiceRequest]:
        """The held parts not yet committed (call once, before :meth:`record`); committed again by age from now."""
        requests = []
        for seq, payload, _spans in self._disk.replay():
            requests.append(ExportTraceServiceRequest.FromString(payload))
            self._pending.append((seq, now))
        return requests

    @staticmethod
    def incoming(request: ExportTraceServiceRequest, original: bytes | None) -> Incoming:
        raw = original if original is not None else request.SerializeToString()
        span_ids = [span.span_id for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        return Incoming(raw, span_ids)

    def record(self, incoming: Incoming, output: bytes, held: int, now: float) -> None:
        """Write the spans of ``incoming`` that are not in ``output`` (the bytes forwarded) when the stitcher held
        ``held`` of them back."""
        if not held:  # nothing of this request waits in the span store: no output to look through
            return
        forwarded = TraceRequest.FromString(output)
        sent = {span.span_id for rs in forwarded.resource_spans for ss in rs.scope_spans for span in ss.spans}
        missing = set(incoming.span_ids) - sent
        if not missing:
            return
        kept_back = ExportTraceServiceRequest()
        count = 0
        for resource_spans in ExportTraceServiceRequest.FromString(incoming.raw).resource_spans:
            target_resource = None
            for scope_spans in resource_spans.scope_spans:
                kept = [span for span in scope_spans.spans if span.span_id in missing and _valid_ids(span)]
                if not kept:
                    continue
                if target_resource is None:
                    target_resource = kept_back.resource_spans.add(
                        resource=resource_spans.resource, schema_url=resource_spans.schema_url
                    )
                target_scope = target_resource.scope_spans.add(
                    scope=scope_spans.scope, schema_url=scope_spans.schema_url
                )
                target_scope.spans.extend(kept)
                count += len(kept)
        if not count:
            return
        try:
            self._pending.append((self._disk.append(kept_back.SerializeToString(), count), now))
            self.error = None
        except OSError as error:
            self.error = f"cannot write {self._disk.directory}: {error}"
            logger.error("%s; %d held spans are in memory only", self.error, count)

    def commit_before(self, cutoff: float) -> None:
        """Every span held before ``cutoff`` has left the store and was queued for export: forget those records."""
        last = None
        while self._pending and self._pending[0][1] <= cutoff:
            last = self._pending.popleft()[0]
        if last is not None:
            self._disk.commit(last)

    def commit_all(self) -> None:
        """Everything held was forwarded (shutdown): nothing to replay."""
        if self._pending:
            self._disk.commit(self._pending[-1][0])
            self._pending.clear()

    def close(self) -> None:
        self._disk.close()


def _valid_ids(span: Span) -> bool:
    """Spans the stitcher rejected (ids of the wrong length) are not held: nothing to replay for them."""
    return (
        len(span.trace_id) == _TRACE_ID_BYTES
        and len(span.span_id) == _SPAN_ID_BYTES
        and len(span.parent_span_id) in (0, _SPAN_ID_BYTES)
    )

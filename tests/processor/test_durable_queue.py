"""``queue_dir``: spans are acknowledged once they are on disk (queued or held), and a SIGKILLed processor sends
them after a restart."""

from __future__ import annotations

import http.client
import os
import signal
from collections import Counter

from jobtrail.processor.exporters.disk_queue import DiskQueue
from jobtrail.processor.hold_journal import HoldJournal
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .builders import attempt_root, new_trace_id, request, span
from .conftest import wait_for

REQUESTS, SPANS_PER_REQUEST = 16, 500


def test_records_come_back_in_order_until_committed(tmp_path, monkeypatch):
    monkeypatch.setattr("jobtrail.processor.exporters.disk_queue.SEGMENT_BYTES", 100)
    queue = DiskQueue(str(tmp_path))
    seqs = [queue.append(f"payload {index}".encode() * 10, index) for index in range(6)]
    queue.commit(seqs[2])
    queue.close()

    reopened = DiskQueue(str(tmp_path))
    assert [(seq, payload, spans) for seq, payload, spans in reopened.replay()] == [
        (seqs[index], f"payload {index}".encode() * 10, index) for index in range(3, 6)
    ]
    assert reopened.append(b"after restart", 1) == seqs[-1] + 1
    reopened.commit(seqs[-1] + 1)
    assert reopened.replay() == []
    reopened.close()
    segments = [name for name in os.listdir(tmp_path) if name.startswith("segment-")]
    assert len(segments) == 1, "segments with nothing left to send are deleted"


def test_a_torn_last_record_ends_the_replay(tmp_path):
    queue = DiskQueue(str(tmp_path))
    queue.append(b"whole", 1)
    queue.append(b"torn at a power loss", 2)
    queue.close()
    (segment,) = [tmp_path / name for name in os.listdir(tmp_path) if name.startswith("segment-")]
    segment.write_bytes(segment.read_bytes()[:-4])

    assert [payload for _seq, payload, _spans in DiskQueue(str(tmp_path)).replay()] == [b"whole"]


def post_spans(port: int, prefix: str) -> None:
    """REQUESTS requests of SPANS_PER_REQUEST plain spans; every one must be acknowledged with 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for number in range(REQUESTS):
            spans = [span(f"{prefix} {number}-{index}", new_trace_id()) for index in range(SPANS_PER_REQUEST)]
            body = request(*spans).SerializeToString()
            connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
    finally:
        connection.close()


def test_sigkill_loses_nothing_that_was_acknowledged(grpc_downstream, processor_process, tmp_path):
    grpc_downstream.stop()  # the next hop is down: everything stays queued
    queue_dir = str(tmp_path / "queue")
    total = REQUESTS * SPANS_PER_REQUEST
    first = processor_process("--export-to", grpc_downstream.url, "--queue-dir", queue_dir)
    post_spans(first.http_port, "acked")
    assert first.metric("jobtrail_processor_export_queue_spans") == total

    assert first.kill() == -signal.SIGKILL
    grpc_downstream.start()
    second = processor_process("--export-to", grpc_downstream.url, "--queue-dir", queue_dir)

    wait_for(lambda: len(grpc_downstream.recorder.spans()) >= total, "every acknowledged span after the restart")
    names = Counter(s.name for s in grpc_downstream.recorder.spans())
    assert len(names) == total and max(names.values()) == 1, "each span once"
    wait_for(lambda: second.metric("jobtrail_processor_export_queue_spans") == 0, "the queue empty")
    assert second.terminate() == 0
    third = processor_process("--export-to", grpc_downstream.url, "--queue-dir", queue_dir)
    post_spans(third.http_port, "later")
    wait_for(lambda: len(grpc_downstream.recorder.spans()) >= 2 * total, "the next spans")
    assert third.terminate() == 0
    assert len(grpc_downstream.recorder.spans()) == 2 * total, "nothing delivered before was sent again"


def test_without_queue_dir_a_sigkill_loses_what_was_queued(grpc_downstream, processor_process):
    """What docs/processor.md says a crash costs without ``queue_dir``: every queued span."""
    grpc_downstream.stop()
    first = processor_process("--export-to", grpc_downstream.url)
    post_spans(first.http_port, "acked")
    assert first.kill() == -signal.SIGKILL
    grpc_downstream.start()
    second = processor_process("--export-to", grpc_downstream.url)
    post_spans(second.http_port, "after")

    wait_for(lambda: len(grpc_downstream.recorder.spans()) >= REQUESTS * SPANS_PER_REQUEST, "the new spans")
    assert second.terminate() == 0
    assert {s.name.split()[0] for s in grpc_downstream.recorder.spans()} == {"after"}


def test_sigkill_keeps_held_spans_and_they_are_stitched_after_the_restart(grpc_downstream, processor_process, tmp_path):
    """Children acknowledged while their attempt root was unknown (held, in memory) survive the crash too."""
    args = ("--export-to", grpc_downstream.url, "--queue-dir", str(tmp_path / "queue"), "--hold", "600")
    enqueue = span("send default", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    root = attempt_root(enqueue)
    children = [span(f"child {index}", root.trace_id, root.span_id) for index in range(50)]
    first = processor_process(*args)
    assert first.post_protobuf(request(*children[:20]).SerializeToString()) == 200
    assert first.post_protobuf(request(*children[20:], service="other").SerializeToString()) == 200
    assert first.metric("jobtrail_processor_spans_held") == 50
    assert first.kill() == -signal.SIGKILL

    second = processor_process(*args)
    assert second.metric("jobtrail_processor_spans_held") == 50, "the held spans are back"
    assert grpc_downstream.recorder.spans() == []
    assert second.post_protobuf(request(enqueue, root, service="api").SerializeToString()) == 200

    wait_for(lambda: len(grpc_downstream.recorder.spans()) >= 52, "the children stitched with their root")
    delivered = grpc_downstream.recorder.spans_by_name()
    assert len(grpc_downstream.recorder.spans()) == 52, "each span once"
    assert {delivered[f"child {index}"].trace_id for index in range(50)} == {enqueue.trace_id}
    assert grpc_downstream.recorder.resource_of("child 49")["service.name"] == "other"
    assert second.terminate() == 0
    third = processor_process(*args)
    assert third.metric("jobtrail_processor_spans_held") == 0, "nothing replayed after a clean stop"
    assert third.terminate() == 0
    assert len(grpc_downstream.recorder.spans()) == 52


def test_the_hold_journal_keeps_only_held_spans_until_their_window_is_over(tmp_path):
    kept, held = span("sent on", new_trace_id()), span("held back", new_trace_id(), b"\x01" * 8)
    incoming_request = request(kept, held)
    journal = HoldJournal(str(tmp_path))
    incoming = HoldJournal.incoming(incoming_request, None)
    journal.record(incoming, request(kept).SerializeToString(), held=1, now=100.0)
    unchanged = request(kept)
    journal.record(HoldJournal.incoming(unchanged, None), unchanged.SerializeToString(), held=0, now=100.5)
    journal.commit_before(99.0)
    journal.close()

    reopened = HoldJournal(str(tmp_path))
    (replayed,) = reopened.replay(now=5.0)
    assert [s.name for s in replayed.resource_spans[0].scope_spans[0].spans] == ["held back"]
    assert replayed.resource_spans[0].resource.attributes[0].value.string_value == "worker"
    reopened.commit_before(5.0)
    reopened.close()
    assert HoldJournal(str(tmp_path)).replay(now=6.0) == []

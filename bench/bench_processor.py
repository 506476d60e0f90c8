"""Benchmark of the jobtrail collector processor, in one run:

1. the floor: protobuf parse + serialize of the very same OTLP requests (nothing else);
2. in-process stitching: parse -> Stitcher.process -> serialize, on this one core;
   once with the default workload, once with every attempt trace arriving children-first;
3. memory per held span and per remembered trace mapping (tracemalloc);
4. end to end over gRPC: sender -> processor (a subprocess pinned to one core) -> sink, spans/s, with requests
   of 512 spans and of 32 spans, plus spans per CPU-second of the processor.

Usage: .venv/bin/python bench/bench_processor.py [--spans 200000] [--batch 512] [--small-batch 32]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent import futures

import grpc
from google.protobuf import __version__ as protobuf_version
from google.protobuf.internal import api_implementation
from jobtrail.conventions import (
    ATTR_JOB_ATTEMPT,
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_DESTINATION_NAME,
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_MESSAGING_SYSTEM,
    ATTR_REQUEST_ID,
    LINK_TYPE_ENQUEUED_BY,
)
from jobtrail.otlp import EXPORT_METHOD_PATH
from jobtrail.processor.hold import PASS_THROUGH, HoldStore, TraceMapping
from jobtrail.processor.stitch import Stitcher
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

STITCH_TARGET = 150_000
END_TO_END_TARGET = 50_000
CHILDREN_PER_TRACE = 7


def _attribute(key: str, value: object) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _span(rng: random.Random, trace_id: bytes, span_id: bytes, parent: bytes, name: str, kind: int) -> Span:
    built = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_time_unix_nano=1_700_000_000_000_000_000 + rng.randrange(10**9),
        end_time_unix_nano=1_700_000_001_000_000_000 + rng.randrange(10**9),
    )
    built.attributes.extend(
        [
            _attribute(ATTR_REQUEST_ID, f"req_{rng.getrandbits(64):016x}"),
            _attribute("db.system", "redis"),
            _attribute("db.operation.name", "GET"),
            _attribute("server.port", 6379),
        ]
    )
    return built


def build_workload(total_spans: int, batch: int, seed: int = 7, split_share: float = 0.25) -> list[bytes]:
    """OTLP requests of ``batch`` spans: half job-attempt traces, half plain traces, 8 spans per trace.

    ``split_share`` of the attempt traces are split so their children come one request before their root
    (the case that needs holding); the rest arrive whole, the way one worker's batch usually does.
    """
    rng = random.Random(seed)
    spans: list[Span] = []
    deferred_roots: list[Span] = []
    while len(spans) < total_spans:
        trace_id = rng.randbytes(16)
        root_id = rng.randbytes(8)
        is_job = rng.random() < 0.5
        if is_job:
            root = _span(rng, trace_id, root_id, b"", "process default", Span.SPAN_KIND_CONSUMER)
            root.attributes.extend(
                [
                    _attribute(ATTR_MESSAGING_SYSTEM, "rq"),
                    _attribute(ATTR_MESSAGING_OPERATION_TYPE, "process"),
                    _attribute(ATTR_MESSAGING_DESTINATION_NAME, "default"),
                    _attribute(ATTR_JOB_ATTEMPT, 1),
                ]
            )
            root.links.add(
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                attributes=[_attribute(ATTR_LINK_TYPE, LINK_TYPE_ENQUEUED_BY)],
            )
        else:
            root = _span(rng, trace_id, root_id, b"", "GET /status", Span.SPAN_KIND_SERVER)
        children = [
            _span(rng, trace_id, rng.randbytes(8), root_id, "redis GET", Span.SPAN_KIND_CLIENT)
            for _ in range(CHILDREN_PER_TRACE)
        ]
        spans.extend(children)
        if is_job and rng.random() < split_share:
            deferred_roots.append(root)
        else:
            spans.append(root)
        if len(spans) % batch < 8 and deferred_roots:
            spans.extend(deferred_roots)
            deferred_roots.clear()
    spans.extend(deferred_roots)
    requests = []
    for start in range(0, len(spans), batch):
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(
            [_attribute("service.name", "worker"), _attribute("host.name", "bench"), _attribute("process.pid", 42)]
        )
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "jobtrail.rq"
        scope_spans.scope.version = "0.1.0"
        scope_spans.spans.extend(spans[start : start + batch])
        requests.append(request.SerializeToString())
    return requests


def count_spans(payloads: list[bytes]) -> int:
    return sum(
        len(ss.spans)
        for payload in payloads
        for rs in ExportTraceServiceRequest.FromString(payload).resource_spans
        for ss in rs.scope_spans
    )


def best_of(runs: int, work) -> float:
    """The fastest of ``runs`` timings (seconds): the least disturbed by the rest of the machine."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def floor(payloads: list[bytes]) -> None:
    for payload in payloads:
        ExportTraceServiceRequest.FromString(payload).SerializeToString()


def new_stitcher() -> Stitcher:
    return Stitcher(HoldStore(2.0, 900.0, 1_000_000, 1_000_000), "jobtrail")


def stitch_all(payloads: list[bytes]) -> tuple[int, int]:
    stitcher = new_stitcher()
    stitched = out = 0
    for payload in payloads:
        result = stitcher.process(ExportTraceServiceRequest.FromString(payload), 0.0)
        if result.modified:
            result.request.SerializeToString()
        stitched += result.stitched
        out += result.spans_out
    drained = stitcher.drain()
    return stitched, out + drained.spans_out


def held_span_memory(payloads: list[bytes]) -> tuple[float, int]:
    """Bytes per held span: feed only non-root spans so every one of them is held."""
    children_only = []
    for payload in payloads:
        request = ExportTraceServiceRequest.FromString(payload)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                keep = [s for s in ss.spans if s.parent_span_id]
                del ss.spans[:]
                ss.spans.extend(keep)
        children_only.append(request)
    stitcher = new_stitcher()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for request in children_only:
        stitcher.process(request, 0.0)
    children_only.clear()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = stitcher.store.held_spans
    return (after - before) / held, held


def mapping_memory(count: int = 100_000) -> tuple[float, float]:
    """Bytes per remembered original -> target mapping (what ``max_mappings`` bounds): (plain, attempt)."""
    rng = random.Random(3)
    target, link_span = rng.randbytes(16), rng.randbytes(8)
    sizes = []
    for make in (lambda: PASS_THROUGH, lambda: TraceMapping(target, link_span)):
        store = new_stitcher().store
        ids = [rng.randbytes(16) for _ in range(count)]
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for trace_id in ids:
            store.remember(trace_id, make(), 0.0)
        sizes.append((tracemalloc.get_traced_memory()[0] - before) / count)
        tracemalloc.stop()
    return sizes[0], sizes[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """The next hop: counts spans that arrive."""

    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()

    def Export(self, request, context):
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.spans += count
        return ExportTraceServiceResponse()


def end_to_end(payloads: list[bytes], total: int, processor_cpu: int, hold: float) -> tuple[float, float, str]:
    """Through a processor subprocess pinned to one core: (spans/s wall clock from the first send until the sink
    has every span, spans per CPU-second of the processor, details). The sender and the sink share the other core.
    """
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    sink_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    launcher = (
        f"import os, sys; os.sched_setaffinity(0, {{{processor_cpu}}}); "
        "from jobtrail.processor.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            launcher,
            "--listen-grpc",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
            "--export-to",
            f"grpc://127.0.0.1:{sink_port}",
            "--hold",
            str(hold),
            "--log-level",
            "WARNING",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JOBTRAIL_PROCESSOR_QUEUE_MAX_SPANS": "400000"},
    )
    try:
        line = process.stderr.readline()
        grpc_port = int(re.search(r"grpc=(\d+)", line).group(1))
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        export = channel.unary_unary(EXPORT_METHOD_PATH, request_serializer=None, response_deserializer=None)
        grpc.channel_ready_future(channel).result(timeout=30)
        refusals = 0

        def send(payload: bytes) -> None:
            nonlocal refusals
            while True:
                try:
                    export(payload, timeout=60)
                    return
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    refusals += 1
                    time.sleep(0.05)

        cpu_before = cpu_seconds(process.pid)
        started = time.perf_counter()
        with futures.ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(send, payloads))
        deadline = time.monotonic() + 120
        while sink.spans < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sink got {sink.spans} of {total} spans")
            time.sleep(0.001)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(process.pid) - cpu_before
        channel.close()
        details = f"{elapsed:.2f} s wall, processor busy {cpu / elapsed:.0%} of its core, {refusals} retryable refusals"
        return total / elapsed, total / cpu, details
    finally:
        process.terminate()
        process.wait(timeout=60)
        server.stop(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--small-batch", type=int, default=32, help="a second end-to-end run with small requests")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    bench_cpu = cpus[-1]
    processor_cpu = cpus[0]
    os.sched_setaffinity(0, {bench_cpu})

    payloads = build_workload(args.spans, args.batch)
    total = count_spans(payloads)
    size = sum(len(p) for p in payloads)
    print(f"workload: {total} spans in {len(payloads)} requests of {args.batch}, {size / total:.0f} bytes/span")
    print(f"python {sys.version.split()[0]}, protobuf {protobuf_version} ({api_implementation.Type()}), ", end="")
    print(f"grpcio {grpc.__version__}, {os.cpu_count()} cpus; in-process parts pinned to cpu {bench_cpu}")

    def row(label: str, value: float, unit: str, rest: str = "") -> None:
        print(f"{label:<46}{value:>10,.0f} {unit}{'  ' + rest if rest else ''}")

    floor_rate = total / best_of(args.runs, lambda: floor(payloads))
    row("floor: protobuf parse + serialize", floor_rate, "spans/s")

    def stitching(label: str, work: list[bytes], work_total: int) -> None:
        stitched, out = stitch_all(work)
        assert out == work_total, f"stitcher forwarded {out} of {work_total} spans"
        rate = work_total / best_of(args.runs, lambda: stitch_all(work))
        verdict = "meets" if rate >= STITCH_TARGET else "MISSES"
        rest = f"= {rate / floor_rate:.2f} x floor; {stitched} of {work_total} moved; {verdict} {STITCH_TARGET:,}/core"
        row(label, rate, "spans/s", rest)

    stitching("stitching: parse + stitch + serialize", payloads, total)
    worst = build_workload(args.spans, args.batch, split_share=1.0)
    stitching("  ... every attempt trace children-first", worst, count_spans(worst))

    per_span, held = held_span_memory(payloads)
    row("memory per held span (tracemalloc)", per_span, "bytes", f"({held} spans held)")
    plain, attempt = mapping_memory()
    row("memory per remembered trace mapping", plain, "bytes", f"(plain trace; {attempt:,.0f} for an attempt trace)")

    for batch in (args.batch, args.small_batch):
        work = payloads if batch == args.batch else build_workload(args.spans // 2, batch)
        rate, per_cpu, details = end_to_end(work, count_spans(work), processor_cpu, hold=2.0)
        verdict = "meets" if rate >= END_TO_END_TARGET else "MISSES"
        rest = f"= {rate / floor_rate:.2f} x floor; {verdict} {END_TO_END_TARGET:,}; {per_cpu:,.0f} per CPU-second"
        row(f"end to end over gRPC, requests of {batch}", rate, "spans/s", rest)
        print(f"{'':<46}({details})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

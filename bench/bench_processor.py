"""Benchmark of the jobtrail collector processor, in one run:

1. in-process: the floor (protobuf parse + serialize of the very same requests), the stitching stage alone
   (parse -> Stitcher.process -> serialize) on one core, with the default workload and with every attempt trace
   arriving children-first; memory per held span and per remembered decision (tracemalloc);
2. paired rounds end to end over gRPC, sender -> X -> sink, where X is the processor (a subprocess pinned to one
   core) or a minimal Python gRPC pass-through (same core, same thread pool size, forwards the raw bytes of every
   request with one blocking call, parses nothing), and the *Python floor*: the same hop doing only what any
   stitcher written in Python must do per request (the validating parse, and every span's three ids read through
   the processor's view of OTLP), with no decision and no change. Each round runs them back to back, so the
   per-round ratios (throughput, CPU per span) compare them under the same machine load; min / median / max;
3. latency at a paced 20k spans/s (requests of 100 spans, whole traces): send -> arrival at the sink, for the
   sink directly, through the pass-through and through the processor; "added" = minus the direct figure.

Usage: .venv/bin/python bench/bench_processor.py [--spans 200000] [--batch 512] [--rounds 5]
       [--end-to-end-only]   (skips part 1: what runs against an older checkout, e.g. to measure main)
       [--before CHECKOUT]   (a third hop in every round and in the latency runs: the processor of another
                              checkout, e.g. ``git archive 8b32dd0 | tar -x -C /tmp/before``, so that "now / before"
                              is a paired per-round ratio instead of two runs minutes apart)
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import deque
from collections.abc import Callable
from concurrent import futures
from operator import attrgetter

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
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

CHILDREN_PER_TRACE = 7
SEQ_ATTRIBUTE = "bench.seq"
LATENCY_SPANS_PER_SECOND = 20_000
LATENCY_BATCH = 100
LATENCY_SECONDS = 6.0
TARGET_CPU_RATIO = 2.5
TARGET_SPEEDUP = 1.5
PROCESSOR, PASS_THROUGH, FLOOR, BEFORE, DIRECT = "processor", "pass-through", "python-floor", "before", "direct"
TARGET_P99_ADDED_MS = 5.0


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


def build_workload(
    total_spans: int, batch: int, seed: int = 7, split_share: float = 0.25, tag: bool = False
) -> list[bytes]:
    """OTLP requests of ``batch`` spans: half job-attempt traces, half plain traces, 8 spans per trace.

    ``split_share`` of the attempt traces are split so their children come one request before their root
    (the case that needs holding); the rest arrive whole, the way one worker's batch usually does. ``tag`` marks
    each request's resource with its sequence number (``bench.seq``), for the latency runs.
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
        if tag:
            resource_spans.resource.attributes.append(_attribute(SEQ_ATTRIBUTE, len(requests)))
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


def new_stitcher():  # type: ignore[no-untyped-def]
    """Imported here so that ``--end-to-end-only`` runs against checkouts with another internal layout. Results
    come as the pipeline takes them (the processor's view of OTLP, only serialized)."""
    from jobtrail.processor.decision_cache import DecisionCache
    from jobtrail.processor.span_store import SpanStore
    from jobtrail.processor.stitch import Stitcher
    from jobtrail.processor.view import TraceRequest

    spans, decisions = SpanStore(2.0, 1_000_000, 1 << 40), DecisionCache(900.0, 1_000_000)
    return Stitcher(spans, decisions, "jobtrail", results=TraceRequest)


def stitch_all(payloads: list[bytes]) -> tuple[int, int]:
    """What the consume path does per request: the receiver's validating parse, stitching, serializing."""
    stitcher = new_stitcher()
    stitched = out = 0
    for payload in payloads:
        result = stitcher.process(ExportTraceServiceRequest.FromString(payload), 0.0, payload)
        if result.modified:
            result.serialized()
        stitched += result.stitched
        out += result.spans_out
    drained = stitcher.drain()
    return stitched, out + drained.spans_out


def held_span_memory(payloads: list[bytes]) -> tuple[float, int, int]:
    """Bytes per held span (tracemalloc) and what the store counted: feed only non-root spans, all held."""
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
    held = stitcher.spans.held_spans
    return (after - before) / held, held, stitcher.spans.held_bytes


def decision_memory(count: int = 100_000) -> tuple[float, float]:
    """Bytes per remembered decision (what ``max_mappings`` bounds): (plain trace, attempt trace)."""
    from jobtrail.processor.decision_cache import PASS_THROUGH, TraceMapping

    rng = random.Random(3)
    target, link_span = rng.randbytes(16), rng.randbytes(8)
    sizes = []
    for make in (lambda: PASS_THROUGH, lambda: TraceMapping(target, link_span)):
        cache = new_stitcher().decisions
        ids = [rng.randbytes(16) for _ in range(count)]
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for trace_id in ids:
            cache.remember(trace_id, make(), 0.0)
        sizes.append((tracemalloc.get_traced_memory()[0] - before) / count)
        tracemalloc.stop()
    return sizes[0], sizes[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sink:
    """The next hop, on raw bytes: counts spans; with ``timed`` also notes when each ``bench.seq`` first arrived."""

    def __init__(self, timed: bool = False) -> None:
        self.spans = 0
        self.arrivals: dict[int, float] = {}
        self.lock = threading.Lock()
        self._timed = timed
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(self._export, request_deserializer=None, response_serializer=None)
        service, method = EXPORT_METHOD_PATH.strip("/").split("/")
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        now = time.monotonic()
        request = ExportTraceServiceRequest.FromString(body)
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.spans += count
            if self._timed:
                for rs in request.resource_spans:
                    for attribute in rs.resource.attributes:
                        if attribute.key == SEQ_ATTRIBUTE:
                            self.arrivals.setdefault(attribute.value.int_value, now)
        return EMPTY_RESPONSE

    def stop(self) -> None:
        self._server.stop(0)


EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


def read_every_id(body: bytes) -> None:
    """What any stitcher in Python must do with a request before deciding anything: parse it with the full types
    (bad input is refused, so a batch is never poisoned), and read every span's three ids, at the cheapest (the
    processor's view of OTLP, a C-level ``map`` per id)."""
    from jobtrail.processor.view import TraceRequest  # the floor hop only: not in the --before checkout's layout

    ExportTraceServiceRequest.FromString(body)
    for resource_spans in TraceRequest.FromString(body).resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = list(scope_spans.spans)
            for ids in (_TRACE_ID, _SPAN_ID, _PARENT_SPAN_ID):
                deque(map(ids, spans), maxlen=0)


_TRACE_ID, _SPAN_ID, _PARENT_SPAN_ID = attrgetter("trace_id"), attrgetter("span_id"), attrgetter("parent_span_id")


def serve_pass_through(sink_port: int, kind: str = PASS_THROUGH) -> int:
    """The comparisons: a minimal Python gRPC OTLP hop that forwards each request's bytes as they came; as the
    Python floor, it reads every id first (:func:`read_every_id`)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{sink_port}")
    forward = channel.unary_unary(EXPORT_METHOD_PATH, request_serializer=None, response_deserializer=None)
    inspect = kind == FLOOR

    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        if inspect:
            read_every_id(body)
        return forward(body, timeout=60)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)
    service, method = EXPORT_METHOD_PATH.strip("/").split("/")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"{kind} listening grpc={port}", file=sys.stderr, flush=True)
    server.wait_for_termination()
    return 0


class Hop:
    """A subprocess between the sender and the sink, pinned to one core: the processor, pass-through or floor."""

    def __init__(self, kind: str, sink_port: int, cpu: int, before: str | None = None) -> None:
        pin = f"import os, sys; os.sched_setaffinity(0, {{{cpu}}}); sys.argv[0] = {__file__!r}; "
        env = {**os.environ, "JOBTRAIL_PROCESSOR_QUEUE_MAX_SPANS": "400000"}
        if kind == BEFORE:  # the processor of another checkout: its source roots first on the path
            assert before is not None
            roots = [os.path.join(before, root, "src") for root in ("collector_processor", "instrumentation")]
            env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        if kind in (PROCESSOR, BEFORE):
            code = pin + "from jobtrail.processor.__main__ import main; sys.exit(main(sys.argv[1:]))"
            args = ["--listen-grpc", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"]
            args += ["--export-to", f"grpc://127.0.0.1:{sink_port}", "--log-level", "WARNING"]
        else:
            code = pin + f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            code += "import bench_processor as b; sys.exit(b.serve_pass_through(int(sys.argv[1]), sys.argv[2]))"
            args = [str(sink_port), kind]
        self.process = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True, env=env)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        found = re.search(r"grpc=(\d+)", line)
        if not found:
            raise RuntimeError(f"{kind} did not start: {line}{self.process.stderr.read()}")
        self.port = int(found.group(1))

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def _exporter(port: int) -> tuple[grpc.Channel, Callable]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel, channel.unary_unary(EXPORT_METHOD_PATH, request_serializer=None, response_deserializer=None)


def throughput(kind: str, payloads: list[bytes], total: int, cpu: int, before: str | None) -> tuple[float, float]:
    """Send everything from 4 threads as fast as X takes it: (spans/s until the sink has all, CPU-s per span of X)."""
    sink = Sink()
    hop = Hop(kind, sink.port, cpu, before)
    channel, export = _exporter(hop.port)
    try:

        def send(payload: bytes) -> None:
            while True:
                try:
                    export(payload, timeout=60)
                    return
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    time.sleep(0.05)

        cpu_before = hop.cpu()
        started = time.perf_counter()
        with futures.ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(send, payloads))
        deadline = time.monotonic() + 120
        while sink.spans < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: the sink got {sink.spans} of {total} spans")
            time.sleep(0.001)
        elapsed = time.perf_counter() - started
        return total / elapsed, (hop.cpu() - cpu_before) / total
    finally:
        channel.close()
        hop.stop()
        sink.stop()


def latency(kind: str, payloads: list[bytes], cpu: int, before: str | None) -> list[float]:
    """Paced sends (one request every batch/rate seconds); per request, seconds from send to arrival at the sink."""
    sink = Sink(timed=True)
    hop = Hop(kind, sink.port, cpu, before) if kind != DIRECT else None
    channel, export = _exporter(hop.port if hop else sink.port)
    sent: dict[int, float] = {}
    try:
        interval = LATENCY_BATCH / LATENCY_SPANS_PER_SECOND
        calls = []
        start = time.monotonic()
        for seq, payload in enumerate(payloads):
            due = start + seq * interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent[seq] = time.monotonic()
            calls.append(export.future(payload, timeout=60))
        for call in calls:
            call.result()
        deadline = time.monotonic() + 60
        while len(sink.arrivals) < len(payloads) and time.monotonic() < deadline:
            time.sleep(0.01)
        return sorted(sink.arrivals[seq] - sent[seq] for seq in sink.arrivals)
    finally:
        channel.close()
        if hop:
            hop.stop()
        sink.stop()


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))]


def spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f} / {statistics.median(values):.{digits}f} / {max(values):.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3, help="timings per in-process figure (the best counts)")
    parser.add_argument("--end-to-end-only", action="store_true")
    parser.add_argument(
        "--before",
        metavar="CHECKOUT",
        help="also run the processor of another checkout (its source roots) in each round",
    )
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    bench_cpu, hop_cpu = cpus[-1], cpus[0]
    os.sched_setaffinity(0, {bench_cpu})

    payloads = build_workload(args.spans, args.batch)
    total = count_spans(payloads)
    size = sum(len(p) for p in payloads)
    print(f"workload: {total} spans in {len(payloads)} requests of {args.batch}, {size / total:.0f} bytes/span")
    print(f"python {sys.version.split()[0]}, protobuf {protobuf_version} ({api_implementation.Type()}), ", end="")
    print(f"grpcio {grpc.__version__}, {os.cpu_count()} cpus; bench on cpu {bench_cpu}, hops on cpu {hop_cpu}")

    def row(label: str, value: float, unit: str, rest: str = "") -> None:
        print(f"{label:<46}{value:>10,.0f} {unit}{'  ' + rest if rest else ''}")

    if not args.end_to_end_only:
        from jobtrail.processor.__main__ import tune_gc

        tune_gc()  # as the processor's process runs
        floor_rate = total / best_of(args.runs, lambda: floor(payloads))
        row("floor: protobuf parse + serialize", floor_rate, "spans/s")
        for label, work in (
            ("stitching: parse + stitch + serialize", payloads),
            ("  ... every attempt trace children-first", build_workload(args.spans, args.batch, split_share=1.0)),
        ):
            work_total = count_spans(work)
            stitched, out = stitch_all(work)
            assert out == work_total, f"stitcher forwarded {out} of {work_total} spans"
            rate = work_total / best_of(args.runs, lambda work=work: stitch_all(work))
            row(label, rate, "spans/s", f"= {rate / floor_rate:.2f} x floor; {stitched} of {work_total} moved")
        per_span, held, counted = held_span_memory(payloads)
        row("memory per held span (tracemalloc)", per_span, "bytes", f"({held} held; counted {counted / held:,.0f})")
        plain, attempt = decision_memory()
        row("memory per remembered decision", plain, "bytes", f"(plain trace; {attempt:,.0f} for an attempt trace)")

    kinds = [PROCESSOR, PASS_THROUGH] + ([BEFORE] if args.before else [])
    rounds_kinds = [*kinds, FLOOR]
    rounds: list[dict[str, tuple[float, float]]] = []
    for number in range(args.rounds):
        order = rounds_kinds[number % len(rounds_kinds) :] + rounds_kinds[: number % len(rounds_kinds)]
        rounds.append({kind: throughput(kind, payloads, total, hop_cpu, args.before) for kind in order})
        figures = (
            f"{kind} {rounds[-1][kind][0]:,.0f} spans/s, {rounds[-1][kind][1] * 1e6:.2f} CPU-us/span"
            for kind in rounds_kinds
        )
        print(f"round {number + 1}: " + "; ".join(figures))

    def ratios(kind: str, base: str, what: int) -> list[float]:
        return [measured[kind][what] / measured[base][what] for measured in rounds]

    print(f"end to end, requests of {args.batch}, {args.rounds} paired rounds in rotating order, min / median / max:")
    print(f"  processor spans/s                           {spread([m[PROCESSOR][0] for m in rounds], 0)}")
    print(f"  processor / pass-through spans/s            {spread(ratios(PROCESSOR, PASS_THROUGH, 0))}")
    cpu_ratios = ratios(PROCESSOR, PASS_THROUGH, 1)
    verdict = "meets" if statistics.median(cpu_ratios) <= TARGET_CPU_RATIO else "MISSES"
    print(f"  processor / pass-through CPU per span       {spread(cpu_ratios)}  ({verdict} <= {TARGET_CPU_RATIO})")
    print(f"  python floor / pass-through CPU per span    {spread(ratios(FLOOR, PASS_THROUGH, 1))}")
    print(f"  processor / python floor CPU per span       {spread(ratios(PROCESSOR, FLOOR, 1))}")
    if args.before:
        print(f"  before spans/s                              {spread([m[BEFORE][0] for m in rounds], 0)}")
        print(f"  before / pass-through CPU per span          {spread(ratios(BEFORE, PASS_THROUGH, 1))}")
        speedup = ratios(PROCESSOR, BEFORE, 0)
        verdict = "meets" if statistics.median(speedup) >= TARGET_SPEEDUP else "MISSES"
        print(f"  processor / before spans/s                  {spread(speedup)}  ({verdict} >= {TARGET_SPEEDUP})")
        print(f"  processor / before CPU per span             {spread(ratios(PROCESSOR, BEFORE, 1))}")

    paced = build_workload(int(LATENCY_SPANS_PER_SECOND * LATENCY_SECONDS), LATENCY_BATCH, split_share=0.0, tag=True)
    delays = {kind: latency(kind, paced, hop_cpu, args.before) for kind in [DIRECT, *kinds]}
    print(f"latency at {LATENCY_SPANS_PER_SECOND:,} spans/s (requests of {LATENCY_BATCH}), send -> sink, ms:")
    for kind, values in delays.items():
        p50, p99 = percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3
        added = ""
        if kind != DIRECT:
            direct = delays[DIRECT]
            added_p50 = p50 - percentile(direct, 0.5) * 1e3
            added_p99 = p99 - percentile(direct, 0.99) * 1e3
            verdict = "meets" if added_p99 <= TARGET_P99_ADDED_MS else "MISSES"
            added = f"; added p50 {added_p50:+.1f}, p99 {added_p99:+.1f} ({verdict} <= {TARGET_P99_ADDED_MS})"
        print(f"  {kind:<13} p50 {p50:6.1f}  p99 {p99:6.1f}  ({len(values)} of {len(paced)} arrived){added}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

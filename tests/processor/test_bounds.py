"""Every bound is real: what the processor keeps for held spans (resources and scopes included) stays within
``max_held_bytes``, measured on the process itself, and the span store's own count matches what it keeps."""

from __future__ import annotations

import os
import tracemalloc

import grpc
from jobtrail.otlp import EXPORT_METHOD_PATH
from jobtrail.processor.span_store import SpanStore

from tests.fixtures.processor_process import (
    environment_without_processor_settings,
    processor_command,
    running_processor,
)

from .builders import new_trace_id, request, span, string_attribute
from .conftest import wait_for

MIB = 1024 * 1024
BOUND = 1 * MIB
FIXED_OVERHEAD = 32 * MIB
"""Allocator slack, gRPC buffers, the export queue passing evicted spans on: independent of how much is held."""
SPANS = 1500
RESOURCE_BYTES = 64 * 1024


def orphan_with_big_resource(number: int) -> bytes:
    """One child span whose root never comes, under a distinct 64 KiB resource (the case that used to escape)."""
    built = request(span("job work", new_trace_id(), b"\x01" * 8), service=f"worker-{number}")
    filler = os.urandom(RESOURCE_BYTES // 2).hex()
    built.resource_spans[0].resource.attributes.append(string_attribute("big", filler))
    return built.SerializeToString()


def test_process_memory_stays_within_max_held_bytes_plus_a_fixed_overhead(grpc_downstream, tmp_path):
    env = {**environment_without_processor_settings(), "JOBTRAIL_PROCESSOR_MAX_HELD_BYTES": str(BOUND)}
    command = processor_command("--export-to", grpc_downstream.url, "--hold", "600")
    with running_processor(command, tmp_path / "processor.log", env=env) as processor:
        channel = grpc.insecure_channel(f"127.0.0.1:{processor.grpc_port}")
        export = channel.unary_unary(EXPORT_METHOD_PATH, request_serializer=None, response_deserializer=None)
        for number in range(100):  # warm up: allocator pools, gRPC buffers, the exporter's channel
            export(orphan_with_big_resource(number), timeout=30)
        wait_for(lambda: processor.metric("jobtrail_processor_spans_received_total") == 100, "the warm-up")
        before = processor.status("VmRSS") * 1024

        for number in range(100, 100 + SPANS):
            export(orphan_with_big_resource(number), timeout=30)
        wait_for(lambda: processor.metric("jobtrail_processor_spans_received_total") == 100 + SPANS, "every span")
        wait_for(lambda: processor.metric("jobtrail_processor_export_queue_spans") == 0, "the queue to drain")
        grown = processor.status("VmRSS") * 1024 - before

        held_bytes = processor.metric("jobtrail_processor_held_bytes")
        held = processor.metric("jobtrail_processor_spans_held")
        evicted = processor.metric("jobtrail_processor_spans_forwarded_unchanged_total", reason="hold_full")
        delivered = len(grpc_downstream.recorder.spans())  # before the stop forwards what is still held
        channel.close()

    assert 0 < held_bytes <= BOUND
    assert held + evicted == 100 + SPANS and evicted > SPANS, "the oldest traces were forwarded to make room"
    assert held * RESOURCE_BYTES <= BOUND, "each held span's resource was counted"
    assert grown <= BOUND + FIXED_OVERHEAD, f"the process grew {grown / MIB:.1f} MiB with a {BOUND / MIB:.0f} MiB bound"
    assert delivered == evicted


def test_the_store_counts_at_least_what_it_keeps():
    """tracemalloc over the store alone: the counted bytes cover the real ones (spans, resources, bookkeeping)."""
    store = SpanStore(hold_seconds=60, max_spans=10**6, max_bytes=1 << 40)
    prepared = []
    for number in range(2000):
        built = request(span("job work", new_trace_id(), b"\x01" * 8), service=f"worker-{number % 50}")
        resource_spans = built.resource_spans[0]
        resource = type(resource_spans)(resource=resource_spans.resource).SerializeToString()
        scope_spans = resource_spans.scope_spans[0]
        prepared.append((scope_spans.spans[0].trace_id, resource, scope_spans.SerializeToString()))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for trace_id, resource, scope_spans in prepared:
        # Fresh copies, as the stitcher makes them per request: duplicates of a held resource are let go.
        store.hold(bytes(bytearray(trace_id)), bytes(bytearray(resource)), bytes(bytearray(scope_spans)), 1, now=0.0)
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert store.held_bytes >= kept, f"counted {store.held_bytes} bytes, kept {kept}"
    assert store.held_bytes <= 2 * kept, "and not wildly more (the bound would be wasted)"

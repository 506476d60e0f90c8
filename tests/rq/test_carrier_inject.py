"""The creation context's inject: the same carrier as the configured propagator writes, for every context.

Every enqueue injects, so ``inject_creation_context`` writes tracecontext (and baggage) itself when those are
the configured propagators; these tests hold that route equal to the SDK's propagators and show that any other
configuration goes through the configured propagator untouched.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtrail.conventions import JOB_META_CARRIER_KEY
from jobtrail.rq.carrier import inject_creation_context
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

KEY = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-*/", min_size=1, max_size=12).filter(lambda k: k[0].isalpha())
TRACE_STATE = st.lists(
    st.tuples(KEY, st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=16)), max_size=4
)
BAGGAGE = st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=4)


class Stamp(TextMapPropagator):
    """A propagator of the user's own: only the generic route knows what it writes."""

    def extract(self, carrier: CarrierT, context: Context | None = None, getter: Getter = default_getter) -> Context:
        return context or Context()

    def inject(self, carrier: CarrierT, context: Context | None = None, setter: Setter = default_setter) -> None:
        setter.set(carrier, "x-stamp", "stamped")

    @property
    def fields(self) -> set[str]:
        return {"x-stamp"}


@pytest.fixture
def textmap() -> Iterator[None]:
    configured = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(configured)


def context_of(trace_id: int, span_id: int, flags: int, state: list, entries: dict) -> Context:
    span_context = SpanContext(
        trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags), trace_state=TraceState(state)
    )
    current = trace.set_span_in_context(NonRecordingSpan(span_context))
    for name, value in entries.items():
        current = baggage.set_baggage(name, value, current)
    return current


def written(current: Context) -> dict[str, str]:
    meta: dict = {}
    inject_creation_context(meta, current)
    return meta.get(JOB_META_CARRIER_KEY, {})


def configured_writes(current: Context) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.get_global_textmap().inject(carrier, context=current)
    return carrier


@pytest.mark.parametrize(
    "propagators",
    [
        [TraceContextTextMapPropagator(), W3CBaggagePropagator()],
        [TraceContextTextMapPropagator()],
    ],
    ids=["tracecontext,baggage", "tracecontext"],
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # the fixture only restores the textmap
@given(
    trace_id=st.sampled_from([0, 1, 2**128 - 1]) | st.integers(0, 2**128 - 1),
    span_id=st.sampled_from([0, 1, 2**64 - 1]) | st.integers(0, 2**64 - 1),
    flags=st.integers(0, 255),
    state=TRACE_STATE,
    entries=BAGGAGE,
)
def test_the_direct_route_writes_what_the_sdk_propagators_write(
    textmap, propagators, trace_id, span_id, flags, state, entries
):
    propagate.set_global_textmap(CompositePropagator(propagators))
    current = context_of(trace_id, span_id, flags, state, entries)
    assert written(current) == configured_writes(current)


@pytest.mark.parametrize(
    "configured",
    [
        CompositePropagator([W3CBaggagePropagator(), TraceContextTextMapPropagator()]),
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), Stamp()]),
        Stamp(),
    ],
    ids=["baggage-first", "with-own-propagator", "own-propagator-only"],
)
def test_any_other_configuration_runs_the_configured_propagator(textmap, configured):
    propagate.set_global_textmap(configured)
    current = context_of(0x1234, 0x5678, 1, [("vendor", "v1")], {"jobtrail.request.id": "req_1"})
    assert written(current) == configured_writes(current)
    if isinstance(configured, Stamp):
        assert written(current) == {"x-stamp": "stamped"}


def test_a_propagator_configured_later_takes_effect_at_once(textmap):
    current = context_of(0x1234, 0x5678, 1, [], {"jobtrail.request.id": "req_1"})
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
    assert set(written(current)) == {"traceparent", "baggage"}
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    assert set(written(current)) == {"traceparent"}
    propagate.set_global_textmap(Stamp())
    assert written(current) == {"x-stamp": "stamped"}

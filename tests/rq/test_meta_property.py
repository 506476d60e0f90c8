"""Property: whatever JSON-able values sit under the job.meta keys the instrumentation reads, the job's outcome
is unchanged and its run has exactly one attempt span (and at most one warning naming it)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtrail.conventions import JOB_META_ATTEMPTS_KEY, JOB_META_CARRIER_KEY
from rq.job import JobStatus

from tests.rq import jobs
from tests.rq.conftest import attempt_spans, work_until_done

pytestmark = [pytest.mark.usefixtures("instrumented"), pytest.mark.slow]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=10,
)
hex_ids = st.text(alphabet="0123456789abcdefABCDEF\n", min_size=0, max_size=34)
span_context = st.fixed_dictionaries(
    {}, optional={"trace_id": hex_ids | json_values, "span_id": hex_ids | json_values, "flags": json_values}
)
record = st.fixed_dictionaries(
    {},
    optional={
        key: json_values | extra
        for key, extra in {
            "attempts": st.integers(),
            "last_span": span_context,
            "final": st.booleans(),
            "first_error_type": st.text(),
            "first_error_message": st.text(max_size=5000),
            "runnable_at": st.floats(allow_nan=True, allow_infinity=True),
        }.items()
    },
)
carrier = st.dictionaries(
    st.sampled_from(["traceparent", "tracestate", "baggage"]) | st.text(max_size=12),
    st.text(max_size=200) | st.just("00-" + "1" * 32 + "-" + "2" * 16 + "-01") | json_values,
    max_size=4,
)
meta = st.fixed_dictionaries(
    {}, optional={JOB_META_CARRIER_KEY: carrier | json_values, JOB_META_ATTEMPTS_KEY: record | json_values}
)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=meta)
def test_any_meta_values_leave_the_outcome_and_one_attempt_span(values, queue, span_exporter):
    job = queue.enqueue(jobs.add, 20, 22)
    job.meta.pop(JOB_META_CARRIER_KEY, None)
    job.meta.update(values)
    job.save_meta()
    records = Records()
    logging.getLogger("jobtrail.rq").addHandler(records)
    try:
        assert work_until_done(queue, job) == JobStatus.FINISHED
    finally:
        logging.getLogger("jobtrail.rq").removeHandler(records)
    assert job.return_value() == 42
    assert len(attempt_spans(span_exporter, job)) == 1
    assert len([m for m in records.messages if job.id in m]) <= 1

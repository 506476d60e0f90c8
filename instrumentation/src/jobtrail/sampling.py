"""Head sampling that keeps trails whole: a job attempt is kept exactly when the request that enqueued it was.

With ``link`` propagation (the default) every RQ attempt is a new trace root. The SDK's
``ParentBased(TraceIdRatioBased(r))`` then samples each attempt on its own trace id, independently
of the request: at r = 0.5 about half of the kept requests lose their job and half of the kept jobs
have no request (measured in docs/rq.md). This sampler is ``ParentBased`` with one more rule for
roots: a root span carrying a link marked ``jobtrail.link.type="enqueued_by"`` follows that link's
sampled flag; other roots are sampled by trace id ratio, and every span with a parent follows it.

Usage::

    from jobtrail.sampling import JobtrailParentBasedTraceIdRatio

    TracerProvider(sampler=JobtrailParentBasedTraceIdRatio(0.1))

or with no code change (entry point group ``opentelemetry_traces_sampler``)::

    OTEL_TRACES_SAMPLER=jobtrail_parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 opentelemetry-instrument ...

Use the same sampler in every process of the trail (the API that enqueues and the workers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from jobtrail.conventions import ATTR_LINK_TYPE, LINK_TYPE_ENQUEUED_BY, SAMPLER_NAME
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

__all__ = [
    "DEFAULT_RATIO",
    "EnqueuedByLinkSampler",
    "JobtrailParentBasedTraceIdRatio",
    "jobtrail_parentbased_traceidratio",
    "parse_ratio",
]

_log = logging.getLogger(__name__)

DEFAULT_RATIO = 1.0
"""What the SDK's own ratio samplers use when ``OTEL_TRACES_SAMPLER_ARG`` is not a ratio: keep everything."""


class EnqueuedByLinkSampler(Sampler):
    """For root spans: follow the sampled flag of the first valid ``enqueued_by`` link, else ask ``root``.

    Links that are not links, carry no such attribute, or point at an invalid context are skipped, so
    garbage can only ever fall back to ``root``: it never raises into the span's start.
    """

    def __init__(self, root: Sampler) -> None:
        self._root = root

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        creator = enqueued_by(links)
        if creator is None:
            return self._root.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if creator.trace_flags.sampled:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return f"EnqueuedByLink{{{self._root.get_description()}}}"


class JobtrailParentBasedTraceIdRatio(ParentBased):
    """``ParentBased(TraceIdRatioBased(rate))`` whose roots follow their ``enqueued_by`` link when they have one."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        super().__init__(root=EnqueuedByLinkSampler(TraceIdRatioBased(rate)))

    @property
    def rate(self) -> float:
        return self._rate

    def get_description(self) -> str:
        return f"JobtrailParentBasedTraceIdRatio{{{self._rate}}}"


def jobtrail_parentbased_traceidratio(arg: Any = None) -> JobtrailParentBasedTraceIdRatio:
    """The ``opentelemetry_traces_sampler`` factory; the SDK passes ``OTEL_TRACES_SAMPLER_ARG`` raw (None if unset)."""
    return JobtrailParentBasedTraceIdRatio(parse_ratio(arg))


def parse_ratio(arg: Any) -> float:
    """A ratio in [0, 1] from a string or number; anything else gives ``DEFAULT_RATIO`` with one warning."""
    try:
        rate = float(arg.strip() if isinstance(arg, str) else arg)
    except (TypeError, ValueError):
        rate = math.nan
    if 0.0 <= rate <= 1.0:  # false for NaN too
        return rate
    _log.warning(
        "%s: OTEL_TRACES_SAMPLER_ARG %r is not a ratio between 0 and 1; using the default %s (sample everything)",
        SAMPLER_NAME,
        arg,
        DEFAULT_RATIO,
    )
    return DEFAULT_RATIO


def enqueued_by(links: Any) -> SpanContext | None:
    """The valid span context of the first link marked ``enqueued_by``; None when there is none (or only garbage)."""
    try:
        candidates = list(links or ())
    except Exception:  # not iterable, or an iterator that raises: no usable link
        return None
    for link in candidates:
        try:
            context = link.context
            link_attributes = link.attributes
            if (
                isinstance(context, SpanContext)
                and context.is_valid
                and link_attributes is not None
                and link_attributes.get(ATTR_LINK_TYPE) == LINK_TYPE_ENQUEUED_BY
                and isinstance(context.trace_flags.sampled, bool)
            ):
                return context
        except Exception:  # a link of the wrong shape is skipped, never raised into the span's start
            continue
    return None

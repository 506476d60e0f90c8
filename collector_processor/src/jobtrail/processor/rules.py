"""Which span decides where its trace goes: the link shapes the processor stitches by.

A *deciding span* carries a link to the span that enqueued its job; its whole original trace moves into that
link's trace. Three named shapes, each matched exactly as the instrumentations really emit it:

* ``enqueued_by`` (always on): any span with a link whose ``jobtrail.link.type`` is ``enqueued_by`` -- the
  jobtrail attempt span, and the ``pickup {queue}`` marker that is exported long before a long attempt ends.
* ``semconv_process`` (``stitch_rule: messaging``): a CONSUMER span with ``messaging.operation.type=process``
  (or the pre-1.26 ``messaging.operation=process``, Ruby's Sidekiq with ``propagation_style: :link``) and
  exactly one link.
* ``celery_run`` (``stitch_rule: messaging``): a parentless CONSUMER span with ``celery.action=run`` and exactly
  one link: ``opentelemetry-instrumentation-celery`` with ``use_span_links=True`` (its ``run/<task>`` span
  carries no ``messaging.operation.type``).

The rules read spans in the processor's view (:mod:`jobtrail.processor.view`); a span with exactly one link is
read in full to see its kind and attributes (few spans have links).

Never: a span of any other kind (a SERVER span with one link is a request that merely points somewhere), a
consumer with several links (a batch: no single origin), or a link to an invalid or to its own trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from jobtrail.conventions import (
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_OPERATION_TYPE,
    LINK_TYPE_ENQUEUED_BY,
    OPERATION_PROCESS,
)
from jobtrail.processor.config import STITCH_RULE_MESSAGING
from jobtrail.processor.view import full_span
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_OPERATION as DEPRECATED_MESSAGING_OPERATION,
)

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
_INVALID_TRACE_ID = bytes(TRACE_ID_BYTES)
_INVALID_SPAN_ID = bytes(SPAN_ID_BYTES)
_OPERATION_KEYS = (ATTR_MESSAGING_OPERATION_TYPE, DEPRECATED_MESSAGING_OPERATION)
CELERY_ACTION = "celery.action"
"""What opentelemetry-instrumentation-celery sets on its spans (``run`` on the worker's execution span)."""
CELERY_ACTION_RUN = "run"

LinkFinder = Callable[[Span, bytes], "Span.Link | None"]
"""``(span, its trace id) -> the link that decides the span's trace, or None``."""


def link_finder(stitch_rule: str) -> LinkFinder:
    """The deciding-link test for a ``stitch_rule`` setting."""
    return _messaging_link if stitch_rule == STITCH_RULE_MESSAGING else _enqueued_by_link


def waits_for_its_origin(span: Span) -> bool:
    """A ``celery_run`` span: when its link points into a trace not decided yet, it waits for that decision
    (a retry's link points into the previous attempt's trace, which may arrive later from another process)."""
    span = full_span(span)
    return (
        span.kind == Span.SPAN_KIND_CONSUMER and _string_attribute(span.attributes, CELERY_ACTION) == CELERY_ACTION_RUN
    )


def _enqueued_by_link(span: Span, trace_id: bytes) -> Span.Link | None:
    for link in span.links:
        if _string_attribute(link.attributes, ATTR_LINK_TYPE) == LINK_TYPE_ENQUEUED_BY:
            return _valid(link, trace_id)
    return None


def _messaging_link(span: Span, trace_id: bytes) -> Span.Link | None:
    if len(span.links) == 1:
        full = full_span(span)  # kind and attributes are not in the view
        if full.kind == Span.SPAN_KIND_CONSUMER and (
            _is_process_operation(full.attributes)
            or (not full.parent_span_id and _string_attribute(full.attributes, CELERY_ACTION) == CELERY_ACTION_RUN)
        ):
            return _valid(full.links[0], trace_id)
    return _enqueued_by_link(span, trace_id)


def _valid(link: Span.Link, trace_id: bytes) -> Span.Link | None:
    """The link, if it points at a real span in another trace (garbage never moves a trace anywhere)."""
    target, span_id = link.trace_id, link.span_id
    if len(target) != TRACE_ID_BYTES or target in (_INVALID_TRACE_ID, trace_id) or len(span_id) != SPAN_ID_BYTES:
        return None
    return None if span_id == _INVALID_SPAN_ID else link


def _is_process_operation(attributes: Iterable[KeyValue]) -> bool:
    for attribute in attributes:
        if attribute.key in _OPERATION_KEYS and attribute.value.string_value == OPERATION_PROCESS:
            return True
    return False


def _string_attribute(attributes: Iterable[KeyValue], key: str) -> str | None:
    for attribute in attributes:
        if attribute.key == key:
            return attribute.value.string_value
    return None

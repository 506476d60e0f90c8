"""Reading OTLP/JSON spans (as the browser kit exports them) next to the SDK's in-memory spans."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan

OTLP_KIND_INTERNAL = 1
OTLP_KIND_CLIENT = 3


def attribute(span: dict, key: str):
    """The value of an OTLP/JSON attribute (string, int, bool or double), None when absent."""
    for entry in span.get("attributes", []):
        if entry["key"] == key:
            (value,) = entry["value"].values()
            return value
    return None


def event_attributes(span: dict, name: str) -> list[dict]:
    return [
        {entry["key"]: next(iter(entry["value"].values())) for entry in event.get("attributes", [])}
        for event in span.get("events", [])
        if event["name"] == name
    ]


def hex_trace_id(span: ReadableSpan) -> str:
    return f"{span.context.trace_id:032x}"


def hex_span_id(span: ReadableSpan) -> str:
    return f"{span.context.span_id:016x}"


def hex_parent_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None

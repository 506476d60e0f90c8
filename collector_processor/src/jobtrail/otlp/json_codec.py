"""OTLP/JSON <-> ``ExportTraceServiceRequest``, exactly as the OTLP spec maps it.

The spec departs from the plain protobuf JSON mapping in one place that matters here: trace and span ids
are hex strings, not base64. Everything else (lowerCamelCase names, integer enums, int64 as strings or
numbers, unknown fields ignored) is ``google.protobuf.json_format``; this module only fixes the ids up,
and refuses an id of the wrong length with a message that says where it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TRACE_ID_HEX_LENGTH = 32
SPAN_ID_HEX_LENGTH = 16
_HEX = re.compile(r"[0-9a-fA-F]*")
# (camelCase, proto name, expected hex length, may be empty)
_SPAN_ID_FIELDS = (
    ("traceId", "trace_id", TRACE_ID_HEX_LENGTH, False),
    ("spanId", "span_id", SPAN_ID_HEX_LENGTH, False),
    ("parentSpanId", "parent_span_id", SPAN_ID_HEX_LENGTH, True),
)
_LINK_ID_FIELDS = _SPAN_ID_FIELDS[:2]


class OtlpDecodeError(ValueError):
    """The body is not a valid OTLP/JSON trace export request; the message says why and where."""


def decode_request(body: bytes | str) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON body into the protobuf request, or raise :class:`OtlpDecodeError`."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise OtlpDecodeError(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise OtlpDecodeError("body must be a JSON object with a resourceSpans array")
    for path, container, fields in _id_holders(document):
        for camel, snake, length, may_be_empty in fields:
            for key in (camel, snake):
                if key in container:
                    container[key] = _hex_to_base64(container[key], f"{path}.{key}", length, may_be_empty)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise OtlpDecodeError(f"body is not an OTLP trace export request: {error}") from None
    except SystemError:
        # upb's field lookup raises SystemError for an object key that is not valid Unicode (a lone surrogate
        # such as "\ud800"): the sender's mistake, not ours.
        raise OtlpDecodeError("body is not an OTLP trace export request: an object key is not valid Unicode") from None


def encode_request(request: ExportTraceServiceRequest) -> bytes:
    """The OTLP/JSON form of ``request`` (hex ids, integer enums, lowerCamelCase), as UTF-8 bytes."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for _path, container, fields in _id_holders(document):
        for camel, _snake, _length, _may_be_empty in fields:
            if camel in container:
                container[camel] = base64.b64decode(container[camel]).hex()
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _id_holders(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], tuple]]:
    """Every span and link object of the document, with its JSON path and which id fields it has."""
    for i, resource_spans in _objects(document, ("resourceSpans", "resource_spans"), "resourceSpans"):
        rs_path = f"resourceSpans[{i}]"
        for j, scope_spans in _objects(resource_spans, ("scopeSpans", "scope_spans"), f"{rs_path}.scopeSpans"):
            ss_path = f"{rs_path}.scopeSpans[{j}]"
            for k, span in _objects(scope_spans, ("spans",), f"{ss_path}.spans"):
                span_path = f"{ss_path}.spans[{k}]"
                yield span_path, span, _SPAN_ID_FIELDS
                for m, link in _objects(span, ("links",), f"{span_path}.links"):
                    yield f"{span_path}.links[{m}]", link, _LINK_ID_FIELDS


def _objects(container: dict[str, Any], keys: tuple[str, ...], path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The objects of the array under any spelling of ``keys``; a non-array or non-object is a decode error."""
    for key in keys:
        items = container.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise OtlpDecodeError(f"{path} must be an array")
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise OtlpDecodeError(f"{path}[{index}] must be an object")
            yield index, item


def _hex_to_base64(value: Any, path: str, length: int, may_be_empty: bool) -> str:
    """An OTLP hex id -> the base64 text json_format expects for a bytes field."""
    if not isinstance(value, str):
        raise OtlpDecodeError(f"{path} must be a hex string, got {type(value).__name__}")
    if value == "" and may_be_empty:
        return ""
    if len(value) != length:
        raise OtlpDecodeError(f"{path} must be {length} hex characters, got {len(value)}")
    if not _HEX.fullmatch(value):
        raise OtlpDecodeError(f"{path} must be hex, got {value!r}")
    return base64.b64encode(binascii.unhexlify(value)).decode("ascii")

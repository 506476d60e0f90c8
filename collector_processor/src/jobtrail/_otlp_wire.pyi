"""Types of ``jobtrail._otlp_wire``, the processor's optional C scanner (source: collector_processor/wire/)."""

from collections.abc import Mapping

Claim = tuple[bytes, bytes]
"""(target trace id, link span id): where a span's deciding link points."""
Note = Claim | bytes | None
"""With the link type given, the span's claim (or None); without, the bytes of a span with links (or None)."""
Noted = list[tuple[bytes, Note]]
"""(trace id, note) per span."""

class Parsed:
    """The request as the scan parsed it (a capsule holding its bytes): what :func:`rewrite` works on."""

Scanned = tuple[list[Noted], Noted, set[bytes], int, int, tuple[int, int, int] | None, Parsed]
"""(per scope its parentless spans as (trace id, note), the spans with a parent and a note, the trace ids, valid
spans, spans with invalid ids, the id lengths of the last of those, the parsed request)."""
Held = list[tuple[bytes, bytes, bytes, int]]
"""Per trace and scope: (trace id, the ResourceSpans without scopes, a ScopeSpans with the held spans, count)."""

def scan(raw: bytes, link_type_key: bytes | None, link_type_value: bytes | None, /) -> Scanned | None: ...
def rewrite(
    parsed: Parsed, moves: Mapping[bytes, tuple[bytes, bytes]], hold: set[bytes], /
) -> tuple[bytes | None, int, Held]: ...

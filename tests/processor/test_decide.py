"""The decision stage on plain values: claims and the cache's answers in, decisions out, nothing changed."""

from __future__ import annotations

from jobtrail.processor.decide import decide
from jobtrail.processor.decision_cache import PASS_THROUGH, DecisionCache, TraceMapping

REQUEST, ATTEMPT_1, ATTEMPT_2, PLAIN, CHILDREN_ONLY = (bytes([n]) * 16 for n in range(1, 6))
ENQUEUE, REPUBLISH = b"\x0a" * 8, b"\x0b" * 8


def test_links_decide_plain_roots_pass_and_the_rest_follows_the_cache() -> None:
    known = {ATTEMPT_1: TraceMapping(REQUEST, ENQUEUE)}
    claims = {ATTEMPT_2: TraceMapping(ATTEMPT_1, REPUBLISH), PLAIN: None}

    decided, waiting = decide(claims, [ATTEMPT_1, ATTEMPT_2, PLAIN, CHILDREN_ONLY], known.get)

    assert decided == {
        ATTEMPT_2: TraceMapping(REQUEST, REPUBLISH),  # chained through attempt 1's remembered decision
        PLAIN: PASS_THROUGH,
        ATTEMPT_1: TraceMapping(REQUEST, ENQUEUE),
    }
    assert CHILDREN_ONLY not in decided and waiting == {}, "undecided: its spans wait"
    assert known == {ATTEMPT_1: TraceMapping(REQUEST, ENQUEUE)}


def test_a_plain_root_keeps_a_decision_its_marker_made_earlier() -> None:
    known = {ATTEMPT_1: TraceMapping(REQUEST, ENQUEUE)}
    assert decide({ATTEMPT_1: None}, [ATTEMPT_1], known.get) == ({ATTEMPT_1: TraceMapping(REQUEST, ENQUEUE)}, {})


def test_a_patient_claim_waits_for_a_trace_nobody_decided_yet() -> None:
    claim = TraceMapping(ATTEMPT_1, REPUBLISH)
    assert decide({ATTEMPT_2: claim}, [ATTEMPT_2], {}.get, patient={ATTEMPT_2}) == ({}, {ATTEMPT_2: claim})
    assert decide({ATTEMPT_2: claim}, [ATTEMPT_2], {}.get) == ({ATTEMPT_2: claim}, {}), "others go as it is"
    known = {ATTEMPT_1: PASS_THROUGH}
    assert decide({ATTEMPT_2: claim}, [ATTEMPT_2], known.get, patient={ATTEMPT_2}) == ({ATTEMPT_2: claim}, {})


def test_the_cache_is_read_only_to_deciding_and_refreshed_by_use() -> None:
    cache = DecisionCache(ttl_seconds=10, max_entries=2)
    cache.remember(ATTEMPT_1, TraceMapping(REQUEST, ENQUEUE), now=0.0)
    assert cache.get(ATTEMPT_1, now=10.0) is None and len(cache) == 1, "expired, swept later by expire()"
    cache.remember(ATTEMPT_1, TraceMapping(REQUEST, ENQUEUE), now=9.0)
    cache.expire(now=10.0)
    assert cache.get(ATTEMPT_1, now=18.0) == TraceMapping(REQUEST, ENQUEUE)
    cache.remember(PLAIN, PASS_THROUGH, now=11.0)
    cache.remember(CHILDREN_ONLY, PASS_THROUGH, now=12.0)
    assert len(cache) == 2 and cache.evicted == 1 and cache.get(ATTEMPT_1, now=12.0) is None

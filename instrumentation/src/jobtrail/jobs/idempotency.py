"""Idempotency-Key claims in Redis: one key, one payload, one job.

A claim is written with ``SET NX`` before the enqueue and lives briefly until the enqueue is
confirmed; a request that dies in between frees the key by itself instead of blocking it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

import redis

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
_KEY_PREFIX = "jobtrail:idempotency:"
PENDING_TTL_S = 30


def is_idempotency_key(value: str) -> bool:
    """1 to 255 visible ASCII characters, no spaces."""
    return _KEY_PATTERN.fullmatch(value) is not None


def fingerprint(payload: object) -> str:
    """A digest of the payload: raw bytes as they are, anything else as canonical JSON."""
    data = (
        payload if isinstance(payload, bytes) else json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    )
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Claim:
    fingerprint: str
    job_id: str
    request_id: str


class IdempotencyStore:
    def __init__(self, connection: redis.Redis, scope: str, ttl_s: int) -> None:
        self._connection = connection
        self._scope = scope
        self._ttl_s = ttl_s

    def _key(self, idempotency_key: str) -> str:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        return f"{_KEY_PREFIX}{self._scope}:{digest}"

    def claim(self, idempotency_key: str, claim: Claim) -> Claim:
        """Claim the key; returns the claim that holds it: ``claim`` itself, or the one made earlier."""
        key = self._key(idempotency_key)
        while True:
            if self._connection.set(key, json.dumps(asdict(claim)), nx=True, ex=PENDING_TTL_S):
                return claim
            raw = self._connection.get(key)
            if raw:
                return Claim(**json.loads(raw))
            # The earlier claim expired between SET and GET: try again.

    def confirm(self, idempotency_key: str) -> None:
        """The job is enqueued: keep the claim for the full idempotency window."""
        self._connection.expire(self._key(idempotency_key), self._ttl_s)

    def release(self, idempotency_key: str) -> None:
        """The enqueue failed: free the key so the client's retry can enqueue."""
        self._connection.delete(self._key(idempotency_key))

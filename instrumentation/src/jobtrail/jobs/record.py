"""What jobtrail keeps about an accepted job in Redis, apart from RQ's own data.

RQ deletes a job's hash once its result TTL runs out, and keeps only the latest timestamps of
each kind. The record holds two small keys that outlive the job: a tombstone (who asked for
the job, how many retries it was given) that tells ``expired`` from ``not_found``, and the list
of state changes with their timestamps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import redis

_KEY_PREFIX = "jobtrail:job:"
MAX_HISTORY = 500
"""A job retried many times keeps its latest state changes only; the list stays small."""


def utc(moment: datetime) -> datetime:
    """RQ 2.x hands out naive UTC datetimes, RQ 3.x aware ones; compare them as aware UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. ``2026-01-31T09:15:02.123+00:00``."""
    return utc(moment).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Tombstone:
    request_id: str | None
    queue: str
    max_retries: int


@dataclass(frozen=True)
class StateChange:
    state: str
    at: datetime

    def as_json(self) -> dict[str, str]:
        return {"state": self.state, "at": iso(self.at)}


class JobRecord:
    """The tombstone and state history of one job id."""

    def __init__(self, connection: redis.Redis, job_id: str) -> None:
        self._connection = connection
        self._tombstone_key = f"{_KEY_PREFIX}{job_id}:tombstone"
        self._history_key = f"{_KEY_PREFIX}{job_id}:history"

    def create(self, tombstone: Tombstone, changes: list[StateChange], ttl_s: int | None) -> None:
        """Write the tombstone and the first states; ``ttl_s=None``: no expiry (RQ keeps the job forever too)."""
        with self._connection.pipeline() as pipe:
            pipe.set(self._tombstone_key, json.dumps(asdict(tombstone)))
            pipe.delete(self._history_key)
            pipe.rpush(self._history_key, *(json.dumps(change.as_json()) for change in changes))
            self._expire(pipe, ttl_s)
            pipe.execute()

    def read(self) -> tuple[Tombstone | None, list[StateChange]]:
        with self._connection.pipeline() as pipe:
            pipe.get(self._tombstone_key)
            pipe.lrange(self._history_key, 0, -1)
            raw_tombstone, raw_history = pipe.execute()
        tombstone = Tombstone(**json.loads(raw_tombstone)) if raw_tombstone else None
        history = [_parse_change(raw) for raw in raw_history]
        return tombstone, _collapse(history)

    def append(self, changes: list[StateChange], ttl_s: int | None) -> None:
        """Add newly observed state changes and set the record's remaining life (None: no expiry)."""
        with self._connection.pipeline() as pipe:
            if changes:
                pipe.rpush(self._history_key, *(json.dumps(change.as_json()) for change in changes))
                pipe.ltrim(self._history_key, -MAX_HISTORY, -1)
            self._expire(pipe, ttl_s)
            pipe.execute()

    def append_existing(self, changes: list[StateChange]) -> None:
        """Add changes only if the record exists (a job accepted elsewhere gets no stray key); TTL kept."""
        with self._connection.pipeline() as pipe:
            pipe.rpushx(self._history_key, *(json.dumps(change.as_json()) for change in changes))
            pipe.ltrim(self._history_key, -MAX_HISTORY, -1)
            pipe.execute()

    def _expire(self, pipe: redis.client.Pipeline, ttl_s: int | None) -> None:
        for key in (self._tombstone_key, self._history_key):
            if ttl_s is None:
                pipe.persist(key)
            else:
                pipe.expire(key, ttl_s)


def _parse_change(raw: bytes) -> StateChange:
    entry = json.loads(raw)
    return StateChange(entry["state"], datetime.fromisoformat(entry["at"]))


def _collapse(history: list[StateChange]) -> list[StateChange]:
    """Two status reads racing may both record one change; keep the first of each run."""
    collapsed: list[StateChange] = []
    for change in history:
        if not collapsed or collapsed[-1].state != change.state:
            collapsed.append(change)
    return collapsed

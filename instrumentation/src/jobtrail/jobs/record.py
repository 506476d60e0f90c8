"""What jobtrail keeps about an accepted job in Redis, beside RQ's own data: the record, its items, its events.

Three keys per job id (one hash slot: the id is a hash tag), all written by the side that caused the fact
(the API, the worker or the operator's ``jobtrail jobs requeue``), never by a status read:

- ``jobtrail:job:{<id>}``: a hash of scalar facts (contract, actor, request id, run, terminal state, stage,
  progress, first and last error, retry policy, how long RQ keeps the finished job);
- ``jobtrail:job:{<id>}:events``: the append-only event list (one JSON object per event);
- ``jobtrail:job:{<id>}:items``: a hash item id -> JSON item (state, attempts, error, checkpoint, position).

Every append goes through one Lua script, so "append unless the run is already terminal" is atomic: a
cancel and a completion racing each other cannot both land, and the loser learns it lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import redis
from jobtrail.conventions import ITEM_CANCELLED, ITEM_PENDING, ITEM_RUNNING, ITEM_STATES, JOB_EVENTS, TERMINAL_STATES

_log = logging.getLogger("jobtrail.jobs")

KEY_PREFIX = "jobtrail:job:"
MAX_EVENTS = 2000
"""A job with thousands of items keeps its first events; the status then says so with one warning."""
MAX_ERROR_MESSAGE = 500

# Fields of the record hash.
F_CONTRACT = "contract"
F_ACTOR = "actor"
F_REQUEST_ID = "request_id"
F_QUEUE = "queue"
F_RUN = "run"
F_TERMINAL = "terminal"
F_CANCEL_REQUESTED = "cancel_requested"
F_STAGE = "stage"
F_PROGRESS = "progress"
F_FIRST_ERROR = "first_error"
F_LAST_ERROR = "last_error"
F_MAX_RETRIES = "max_retries"
F_ITEM_ORDER = "item_order"
F_KEPT_UNTIL = "kept_until"
"""When RQ drops the finished job's data (its result or failure TTL after the end): ``job_expired``'s time."""

# KEYS: record, events, items. ARGV: mode, event JSON ('' for none), terminal state ('' for none),
# then field/value pairs to HSET, then '--', then item id/JSON pairs to HSET.
# Modes: 'open' appends only while the run has no terminal state; 'any' always (operator facts);
# 'requeue' only when the run ended as ARGV[4] lists (comma-separated), then clears the terminal state.
_APPEND_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local terminal = redis.call('HGET', KEYS[1], 'terminal')
local mode = ARGV[1]
local start = 4
if mode == 'open' and terminal then return 0 end
if mode == 'requeue' then
  start = 5
  if not terminal or not string.find(',' .. ARGV[4] .. ',', ',' .. terminal .. ',', 1, true) then return 0 end
  redis.call('HDEL', KEYS[1], 'terminal', 'cancel_requested')
  redis.call('HINCRBY', KEYS[1], 'run', 1)
end
if ARGV[2] ~= '' and (ARGV[3] == '0' or redis.call('LLEN', KEYS[2]) < tonumber(ARGV[3])) then
  redis.call('RPUSH', KEYS[2], ARGV[2])
end
local i = start
while i <= #ARGV and ARGV[i] ~= '--' do
  local name, value = ARGV[i], ARGV[i + 1]
  if name == 'first_error' then
    redis.call('HSETNX', KEYS[1], name, value)
  else
    redis.call('HSET', KEYS[1], name, value)
  end
  i = i + 2
end
i = i + 1
while i <= #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
"""


def record_key(job_id: str) -> str:
    """The record's hash key; its events and items keys add ``:events`` / ``:items`` (same slot in a cluster)."""
    return f"{KEY_PREFIX}{{{job_id}}}"


def utc(moment: datetime) -> datetime:
    """RQ 2.x hands out naive UTC datetimes, RQ 3.x aware ones; compare them as aware UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. ``2026-01-31T09:15:02.123+00:00``."""
    return utc(moment).isoformat(timespec="milliseconds")


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class JobError:
    """An error as the status shows it: the exception's class name and its (bounded) message."""

    type: str
    message: str
    at: datetime | None = None

    @classmethod
    def of(cls, error: BaseException, at: datetime | None = None) -> JobError:
        return cls(type(error).__name__, str(error)[:MAX_ERROR_MESSAGE], at)

    def as_json(self, with_time: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        if with_time:
            body["at"] = iso(self.at) if self.at else None
        return body


@dataclass(frozen=True)
class Event:
    event: str
    at: datetime | None
    attempt: int | None = None
    item: str | None = None
    detail: str | None = None
    run: int = 1

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"event": self.event, "at": iso(self.at) if self.at else None}
        if self.attempt is not None:
            body["attempt"] = self.attempt
        if self.item is not None:
            body["item"] = self.item
        if self.detail is not None:
            body["detail"] = self.detail
        return body

    def stored(self) -> str:
        return json.dumps({**self.as_json(), "run": self.run}, separators=(",", ":"))


@dataclass
class Item:
    id: str
    state: str
    attempts: int = 0
    error: JobError | None = None
    checkpoint: Any = None
    final: bool = False
    """Failed for good: a retry of the job does not run it again (an operator requeue may)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error.as_json(with_time=False) if self.error else None,
        }

    def stored(self) -> str:
        body = {**self.as_json(), "checkpoint": self.checkpoint, "final": self.final}
        return json.dumps(body, separators=(",", ":"), default=str)


@dataclass
class Snapshot:
    """One consistent read of a job's record; ``damaged`` names what could not be read (never raises)."""

    job_id: str
    fields: dict[str, str]
    events: list[Event]
    items: list[Item]
    damaged: list[str] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return bool(self.fields)

    def text(self, name: str) -> str | None:
        return self.fields.get(name) or None

    def number(self, name: str, default: int = 0) -> int:
        raw = self.fields.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            self.damaged.append(name)
            return default

    def moment(self, name: str) -> datetime | None:
        raw = self.fields.get(name)
        if not raw:
            return None
        try:
            return utc(datetime.fromisoformat(raw))
        except ValueError:
            self.damaged.append(name)
            return None

    def error(self, name: str) -> JobError | None:
        raw = self.fields.get(name)
        if not raw:
            return None
        parsed = _error_of(_loads(raw))
        if parsed is None:
            self.damaged.append(name)
        return parsed

    @property
    def run(self) -> int:
        return max(self.number(F_RUN, 1), 1)

    @property
    def terminal(self) -> str | None:
        """How the current run ended (None while it runs); a value that is no terminal state is damage."""
        value = self.text(F_TERMINAL)
        if value is not None and value not in TERMINAL_STATES:
            self.damaged.append(F_TERMINAL)
            return None
        return value

    def attempts(self) -> int:
        """Attempts so far, over every run (operator requeues continue the numbering)."""
        return sum(1 for event in self.events if event.event == "job_started")

    def progress(self) -> dict[str, int] | None:
        raw = self.fields.get(F_PROGRESS)
        if not raw:
            return None
        value = _loads(raw)
        if isinstance(value, dict) and all(isinstance(value.get(k), int) for k in ("done", "total")):
            return {"done": value["done"], "total": value["total"]}
        self.damaged.append(F_PROGRESS)
        return None


class JobRecord:
    """The keys of one job id; every write states its condition (see the module docstring)."""

    def __init__(self, connection: redis.Redis, job_id: str) -> None:
        self.job_id = job_id
        self._connection = connection
        self.key = record_key(job_id)
        self.events_key = f"{self.key}:events"
        self.items_key = f"{self.key}:items"
        self._script = connection.register_script(_APPEND_SCRIPT)

    def create(self, fields: Mapping[str, str], first: Event, ttl_s: int | None, items: list[Item]) -> None:
        """The API's first write: the record, ``job_created`` and the items known up front (replacing leftovers)."""
        with self._connection.pipeline() as pipe:
            pipe.delete(self.key, self.events_key, self.items_key)
            mapping: dict[Any, Any] = {**fields, F_RUN: "1", F_ITEM_ORDER: json.dumps([item.id for item in items])}
            pipe.hset(self.key, mapping=mapping)
            pipe.rpush(self.events_key, first.stored())
            if items:
                pipe.hset(self.items_key, mapping={item.id: item.stored() for item in items})
            for key in (self.key, self.events_key, self.items_key):
                if ttl_s is not None:
                    pipe.expire(key, ttl_s)
            pipe.execute()

    def append(
        self,
        event: Event | None,
        *,
        mode: str = "open",
        terminal: str | None = None,
        fields: Mapping[str, str] | None = None,
        items: list[Item] | None = None,
        requeue_from: tuple[str, ...] = (),
        capped: bool = False,
    ) -> bool:
        """Apply one fact atomically; False when its condition failed (terminal run, or no record).

        ``capped`` events (item events) are dropped past :data:`MAX_EVENTS`; job events always land.
        """
        args: list[str] = [mode, event.stored() if event else "", str(MAX_EVENTS) if capped else "0"]
        if mode == "requeue":
            args.append(",".join(requeue_from))
        pairs = dict(fields or {})
        if terminal is not None:
            pairs[F_TERMINAL] = terminal
        for name, value in pairs.items():
            args += [name, value]
        args.append("--")
        for item in items or []:
            args += [item.id, item.stored()]
        return int(self._script(keys=[self.key, self.events_key, self.items_key], args=args)) == 1

    def delete(self) -> None:
        self._connection.delete(self.key, self.events_key, self.items_key)

    def read(self) -> Snapshot:
        with self._connection.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.key)
            pipe.lrange(self.events_key, 0, -1)
            pipe.hgetall(self.items_key)
            raw_fields, raw_events, raw_items = pipe.execute()
        fields = {_text(k): _text(v) for k, v in raw_fields.items()}
        snapshot = Snapshot(self.job_id, fields, [], [])
        for raw in raw_events:
            event = _event_of(_loads(_text(raw)))
            if event is None:
                snapshot.damaged.append("an event")
            else:
                snapshot.events.append(event)
        if len(raw_events) >= MAX_EVENTS:
            snapshot.damaged.append(f"events after the first {MAX_EVENTS} (not kept)")
        snapshot.items = _ordered_items(snapshot, {_text(k): _text(v) for k, v in raw_items.items()})
        return snapshot


def _ordered_items(snapshot: Snapshot, raw_items: dict[str, str]) -> list[Item]:
    order = _loads(snapshot.fields.get(F_ITEM_ORDER, "[]"))
    if not isinstance(order, list) or not all(isinstance(item_id, str) for item_id in order):
        snapshot.damaged.append(F_ITEM_ORDER)
        order = sorted(raw_items)
    items = []
    for item_id in order:
        raw = raw_items.get(item_id)
        item = _item_of(item_id, _loads(raw)) if raw is not None else Item(item_id, "pending")
        if item is None:
            snapshot.damaged.append(f"item {item_id!r}")
            continue
        items.append(item)
    return items


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _parse_time(raw: Any) -> datetime | None:
    return utc(datetime.fromisoformat(raw)) if isinstance(raw, str) else None


def _error_of(raw: Any) -> JobError | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or not isinstance(raw.get("message"), str):
        return None
    try:
        return JobError(raw["type"], raw["message"], _parse_time(raw.get("at")))
    except ValueError:
        return None


def _event_of(raw: Any) -> Event | None:
    if not isinstance(raw, dict) or raw.get("event") not in JOB_EVENTS:
        return None
    try:
        at = _parse_time(raw.get("at"))
    except ValueError:
        return None
    attempt, item, detail, run = raw.get("attempt"), raw.get("item"), raw.get("detail"), raw.get("run", 1)
    if attempt is not None and not isinstance(attempt, int):
        return None
    if (item is not None and not isinstance(item, str)) or (detail is not None and not isinstance(detail, str)):
        return None
    return Event(raw["event"], at, attempt, item, detail, run if isinstance(run, int) else 1)


def _item_of(item_id: str, raw: Any) -> Item | None:
    if not isinstance(raw, dict) or raw.get("state") not in ITEM_STATES or not isinstance(raw.get("attempts"), int):
        return None
    error = _error_of(raw["error"]) if raw.get("error") is not None else None
    if raw.get("error") is not None and error is None:
        return None
    return Item(item_id, raw["state"], raw["attempts"], error, raw.get("checkpoint"), raw.get("final") is True)


def cancelled_items(items: list[Item]) -> list[Item]:
    """The items a cancel stops: those not started (or not finished) now read ``cancelled``; others unchanged."""
    return [replace(item, state=ITEM_CANCELLED) for item in items if item.state in (ITEM_PENDING, ITEM_RUNNING)]


def error_json(error: JobError) -> str:
    return json.dumps(error.as_json(), separators=(",", ":"))


def warn_damaged(snapshot: Snapshot) -> None:
    """One warning per read naming the job and what could not be read."""
    if snapshot.damaged:
        _log.warning(
            "job %s: its jobtrail record is damaged (%s); the status shows what the rest proves",
            snapshot.job_id,
            ", ".join(sorted(set(snapshot.damaged))),
        )

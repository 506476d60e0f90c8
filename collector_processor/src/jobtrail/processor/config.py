"""The processor's one validated configuration: defaults, then a YAML file, then env, then CLI flags.

Every knob lives in :class:`ProcessorConfig`; :func:`load_config` layers the sources in that order
so a container can ship a file and still be tuned with ``JOBTRAIL_PROCESSOR_*`` variables.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

ENV_PREFIX = "JOBTRAIL_PROCESSOR_"
STITCH_RULE_JOBTRAIL = "jobtrail"
"""Deciding spans: those with a link marked ``jobtrail.link.type=enqueued_by`` (see :mod:`.rules`)."""
STITCH_RULE_MESSAGING = "messaging"
"""Also the ``semconv_process`` (Sidekiq) and ``celery_run`` (Celery, ``use_span_links=True``) shapes."""
STITCH_RULES = (STITCH_RULE_JOBTRAIL, STITCH_RULE_MESSAGING)
EXPORT_SCHEMES = ("grpc", "http", "https", "file")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


@dataclass
class ProcessorConfig:
    """Listen addresses, next hops, the hold window and every limit of the processor."""

    grpc_listen: str | None = "127.0.0.1:14317"
    http_listen: str | None = "127.0.0.1:14318"
    export_to: list[str] = field(default_factory=list)
    hold_seconds: float = 2.0
    mapping_ttl_seconds: float = 900.0
    stitch_rule: str = STITCH_RULE_JOBTRAIL
    max_held_spans: int = 200_000
    max_held_bytes: int = 128 * 1024 * 1024
    max_mappings: int = 500_000
    max_request_bytes: int = 4 * 1024 * 1024
    http_max_connections: int = 100
    http_idle_timeout_seconds: float = 30.0
    queue_max_spans: int = 200_000
    queue_max_bytes: int = 128 * 1024 * 1024
    export_batch_max_bytes: int = 3 * 1024 * 1024
    export_timeout_seconds: float = 10.0
    export_stall_seconds: float = 120.0
    queue_dir: str | None = None
    retry_initial_backoff_seconds: float = 0.5
    retry_max_backoff_seconds: float = 30.0
    retry_after_seconds: float = 1.0
    file_max_bytes: int = 64 * 1024 * 1024
    file_backups: int = 3
    shutdown_timeout_seconds: float = 15.0
    log_interval_seconds: float = 60.0

    def validate(self) -> ProcessorConfig:
        """Raise :class:`ConfigError` for anything that cannot work; return self for chaining."""
        if self.grpc_listen is None and self.http_listen is None:
            raise ConfigError("at least one of grpc_listen / http_listen is needed")
        for name in ("grpc_listen", "http_listen"):
            value = getattr(self, name)
            if value is not None:
                split_host_port(value, name)
        if not self.export_to:
            raise ConfigError("export_to needs at least one URL (grpc://host:port, http://host:port, file:///path)")
        for url in self.export_to:
            parts = urlsplit(url)
            if parts.scheme not in EXPORT_SCHEMES:
                raise ConfigError(f"export_to {url!r}: scheme must be one of {', '.join(EXPORT_SCHEMES)}")
            if parts.scheme == "file" and not parts.path.startswith("/"):
                raise ConfigError(f"export_to {url!r}: file URLs need an absolute path (file:///abs/path.jsonl)")
            if parts.scheme != "file" and not parts.hostname:
                raise ConfigError(f"export_to {url!r}: missing host")
        if self.queue_dir is not None and not os.path.isabs(self.queue_dir):
            raise ConfigError(f"queue_dir must be an absolute path, got {self.queue_dir!r}")
        if self.stitch_rule not in STITCH_RULES:
            raise ConfigError(f"stitch_rule must be one of {', '.join(STITCH_RULES)}, got {self.stitch_rule!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{f.name} must not be negative, got {value}")
        for name in (
            "max_request_bytes",
            "queue_max_spans",
            "queue_max_bytes",
            "export_batch_max_bytes",
            "export_timeout_seconds",
            "http_max_connections",
            "http_idle_timeout_seconds",
            "export_stall_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        return self


def split_host_port(value: str, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); port 0 asks for an ephemeral one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _coerce(name: str, raw: Any) -> Any:
    """Turn a YAML/env/CLI value into the field's type, naming the field when it cannot."""
    fields = {f.name: f for f in dataclasses.fields(ProcessorConfig)}
    if name not in fields:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(fields))}")
    default = getattr(ProcessorConfig(), name)
    try:
        if name == "export_to":
            if isinstance(raw, str):
                return [part.strip() for part in raw.split(",") if part.strip()]
            return [str(item) for item in raw]
        if name in ("grpc_listen", "http_listen", "queue_dir"):
            # YAML 1.1 reads a bare `off` / `no` as false: that means "disabled" too.
            if raw is None or raw is False or str(raw).strip().lower() in ("", "none", "off", "false"):
                return None
            return str(raw)
        if isinstance(raw, bool) and isinstance(default, (int, float)):
            raise ValueError("a number is needed")
        if isinstance(default, int):
            number = float(raw) if isinstance(raw, float) else int(raw)
            if number != int(number):
                raise ValueError("a whole number is needed")
            return int(number)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name}: cannot use {raw!r} ({error})") from None


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ProcessorConfig:
    """Defaults < YAML file < ``JOBTRAIL_PROCESSOR_<FIELD>`` env < explicit overrides (CLI flags)."""
    values: dict[str, Any] = {}
    if path:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle) or {}
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        values.update({key: _coerce(key, raw) for key, raw in document.items()})
    environ = os.environ if environ is None else environ
    for f in dataclasses.fields(ProcessorConfig):
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = _coerce(f.name, raw)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(key, raw)
    return ProcessorConfig(**values).validate()

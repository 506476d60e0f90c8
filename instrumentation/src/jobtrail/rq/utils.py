"""Small helpers shared by the producer and attempt sides."""

from __future__ import annotations

from typing import Any

from rq.job import Job


def call_argument(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, name: str) -> Any:
    """An argument of a wrapped call, whether it was passed by position or by name (None when absent)."""
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


def qualified_name(cls: type) -> str:
    """``module.QualName`` for ``error.type`` (semantic conventions), bare for builtins: ``ValueError``."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def func_name_of(job: Job) -> str | None:
    """``rq.job.func_name``, or None for a job whose function cannot be described: it is still sent and run."""
    try:
        return job.func_name
    except Exception:
        return None

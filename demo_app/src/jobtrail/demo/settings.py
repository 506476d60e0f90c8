"""Every knob of the demo in one place, read from the environment so the API, the worker and the
embedded launcher (which starts the worker as a subprocess) agree without passing flags around.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobtrail.trail.cli import DEFAULT_SERVICES

API_SERVICE, WORKER_SERVICE = DEFAULT_SERVICES
WEB_SERVICE = "jobtrail-demo-web"
SCREEN = "Refunds desk"

QUEUE_REPORTS = "reports"
QUEUE_EMAILS = "emails"
QUEUE_IMPORTS = "imports"
QUEUES = (QUEUE_REPORTS, QUEUE_EMAILS, QUEUE_IMPORTS)

ENV_PREFIX = "JOBTRAIL_DEMO_"


@dataclass(frozen=True)
class DemoSettings:
    """How the demo runs; ``from_env`` reads ``REDIS_URL``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` and ``JOBTRAIL_*``."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    """OTLP/gRPC endpoint of the API's and the worker's spans (the processor, or a collector)."""
    span_intake_forward_to: str = "http://127.0.0.1:4318/v1/traces"
    """OTLP/HTTP endpoint the page's spans are forwarded to by the same-origin intake."""
    jaeger_ui_url: str = ""
    """Jaeger's UI, for the page's "see the trace" link; empty hides the link. A URL holding ``{trace_id}`` is the
    link itself (``./dev demo --stack`` links to Jaeger's api_v3 trace, its binary having no UI)."""
    email_failures: int = 2
    """How many times the email provider refuses the login for each receipt before it works."""
    retry_intervals: tuple[int, ...] = (2, 5, 10)
    """Seconds between attempts of the receipt job (increasing); its retry count is their number."""
    work_scale: float = 1.0
    """Size of the report job's real work (1.0 takes a few seconds; tests use far less)."""
    report_seconds: float = 3.0
    """Extra wall time the report spreads over its chunks, so its progress shows and a person can cancel it."""
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DemoSettings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name: str, default: str) -> str:
            return env.get(name) or default

        return cls(
            redis_url=get("REDIS_URL", defaults.redis_url),
            otlp_endpoint=get("OTEL_EXPORTER_OTLP_ENDPOINT", defaults.otlp_endpoint),
            span_intake_forward_to=get("JOBTRAIL_SPAN_INTAKE_FORWARD_TO", defaults.span_intake_forward_to),
            jaeger_ui_url=get("JOBTRAIL_JAEGER_UI_URL", defaults.jaeger_ui_url),
            email_failures=int(get(ENV_PREFIX + "EMAIL_FAILURES", str(defaults.email_failures))),
            retry_intervals=_seconds(get(ENV_PREFIX + "RETRY_INTERVALS", ""), defaults.retry_intervals),
            work_scale=float(get(ENV_PREFIX + "WORK_SCALE", str(defaults.work_scale))),
            report_seconds=float(get(ENV_PREFIX + "REPORT_SECONDS", str(defaults.report_seconds))),
            allowed_origins=tuple(o for o in get(ENV_PREFIX + "ALLOWED_ORIGINS", "").split(",") if o),
        )

    def jaeger_trace_link(self) -> str:
        """The page's link to one trace, ``{trace_id}`` to be filled in; empty when there is no Jaeger."""
        if not self.jaeger_ui_url or "{trace_id}" in self.jaeger_ui_url:
            return self.jaeger_ui_url
        return self.jaeger_ui_url.rstrip("/") + "/trace/{trace_id}"

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` give back these settings (for the worker subprocess)."""
        return {
            "REDIS_URL": self.redis_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
            "JOBTRAIL_SPAN_INTAKE_FORWARD_TO": self.span_intake_forward_to,
            "JOBTRAIL_JAEGER_UI_URL": self.jaeger_ui_url,
            ENV_PREFIX + "EMAIL_FAILURES": str(self.email_failures),
            ENV_PREFIX + "RETRY_INTERVALS": ",".join(str(value) for value in self.retry_intervals),
            ENV_PREFIX + "WORK_SCALE": f"{self.work_scale:g}",
            ENV_PREFIX + "REPORT_SECONDS": f"{self.report_seconds:g}",
            ENV_PREFIX + "ALLOWED_ORIGINS": ",".join(self.allowed_origins),
        }


def _seconds(raw: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4): whole seconds, as RQ's ``Retry`` takes them; an empty value keeps the default."""
    if not raw.strip():
        return default
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}RETRY_INTERVALS must be whole seconds, comma-separated, got {raw!r}") from None
    if not values or any(value < 0 for value in values):
        raise ValueError(f"{ENV_PREFIX}RETRY_INTERVALS needs at least one non-negative number, got {raw!r}")
    return values

"""The rq versions this instrumentation supports (checked by ``BaseInstrumentor`` before instrumenting)."""

_instruments = ("rq >= 2.0, < 4",)

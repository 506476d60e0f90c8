"""jobtrail's version, read by the packaging (hatch) and by every tracer jobtrail creates."""

__version__ = "0.2.0"

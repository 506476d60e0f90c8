"""jobtrail instrumentation: RQ, Flask and the browser kit (one user action, one trace)."""

"""jobtrail collector processor: stitches linked RQ job attempts into the trace that enqueued them.

An OTLP service for any traces pipeline (collector -> processor -> collector or Jaeger)::

    jobtrail-processor --export-to grpc://127.0.0.1:4317 --hold 2

or in Python::

    from jobtrail.processor.config import ProcessorConfig
    from jobtrail.processor.pipeline import Pipeline

    pipeline = Pipeline(ProcessorConfig(export_to=["file:///tmp/traces.jsonl"]))
    pipeline.start()   # OTLP/gRPC on 127.0.0.1:14317, OTLP/HTTP (+ /healthz, /metrics) on 127.0.0.1:14318
    pipeline.stop()    # forwards everything held, drains the exporters

The stages follow the collector's component model: ``receivers/`` (gRPC, HTTP, the OTLP/JSON codec),
``stitch.py`` (validate, then apply: on the request's bytes with the C scanner ``jobtrail._otlp_wire`` when it
is installed, else on the OTLP view of ``view.py``), ``decide.py`` (the pure decision stage),
``rules.py`` (which links decide), ``span_store.py`` and ``decision_cache.py`` (the bounded state, apart),
``exporters/`` (queue + OTLP retries), ``pipeline.py`` (wiring and backpressure), ``telemetry.py`` (counters).
See docs/processor.md.
"""

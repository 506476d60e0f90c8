# One image for the jobtrail processor, the demo API and the demo worker (docker-compose.yml picks the command).

# The processor's C scanner (jobtrail._otlp_wire) is built where a compiler is, and only its wheel is kept.
FROM python:3.11 AS wire
COPY collector_processor/wire /src/wire
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src/wire

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY instrumentation ./instrumentation
COPY collector_processor ./collector_processor
COPY demo_app ./demo_app
COPY --from=wire /wheels /wheels
RUN pip install . /wheels/*.whl \
    && useradd --create-home --uid 10001 jobtrail \
    && mkdir -p /data \
    && chown jobtrail /data

USER jobtrail
CMD ["jobtrail-demo", "--help"]

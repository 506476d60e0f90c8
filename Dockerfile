# One image for the jobtrail processor, the demo API and the demo worker (docker-compose.yml picks the command).
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
RUN pip install . \
    && useradd --create-home --uid 10001 jobtrail \
    && mkdir -p /data \
    && chown jobtrail /data

USER jobtrail
CMD ["jobtrail-demo", "--help"]

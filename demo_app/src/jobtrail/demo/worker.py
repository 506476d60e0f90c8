"""The demo worker: a real forking RQ ``Worker`` on the demo's queues, running the scheduler (for retries)."""

from __future__ import annotations

import redis
from jobtrail.demo.settings import QUEUES, WORKER_SERVICE, DemoSettings
from jobtrail.demo.telemetry import start_telemetry
from rq import Queue, Worker


def run_worker(settings: DemoSettings) -> None:
    """Work until SIGTERM/SIGINT (RQ's warm shutdown lets the current job finish), then flush the spans."""
    provider = start_telemetry(WORKER_SERVICE, settings.otlp_endpoint)
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        # RQ logs each job's call with its arguments by default: never the customer's email address.
        queues = [Queue(name, connection=connection) for name in QUEUES]
        worker = Worker(queues, connection=connection, log_job_description=False)
        worker.work(with_scheduler=True)
    finally:
        provider.shutdown()
        connection.close()

"""An app with no tracing code of its own: ``opentelemetry-instrument python -m tests.rq.enqueue_once URL QUEUE``."""

from __future__ import annotations

import sys

import redis
from rq import Queue

from tests.rq import jobs


def main(redis_url: str, queue_name: str) -> None:
    job = Queue(queue_name, connection=redis.Redis.from_url(redis_url)).enqueue(jobs.add, 2, 40)
    print(job.id)


if __name__ == "__main__":
    main(*sys.argv[1:])

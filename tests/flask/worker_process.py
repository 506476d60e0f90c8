"""A real forking RQ ``Worker`` with the scheduler in its own process: ``python -m tests.flask.worker_process URL Q``.

Burst mode: it works until the queue is empty (retries due at once included), then exits 0.
"""

from __future__ import annotations

import subprocess
import sys

import redis
from rq import Queue, Worker


def start(redis_url: str, queue: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.flask.worker_process", redis_url, queue])


def main(redis_url: str, queue_name: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    Worker([Queue(queue_name, connection=connection)], connection=connection).work(burst=True, with_scheduler=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

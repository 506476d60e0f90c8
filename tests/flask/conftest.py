"""Fixtures for the Flask layer: a real queue on the session's Redis and the sample app."""

from __future__ import annotations

import flask
import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker

from tests.flask.sample_app import create_app

QUEUE_NAME = "receipts"


@pytest.fixture
def queue(redis_conn: redis.Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=redis_conn)


@pytest.fixture
def app(queue: Queue) -> flask.Flask:
    return create_app(queue)


@pytest.fixture
def client(app: flask.Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def run_jobs(queue: Queue):
    """Run every due job with a real SimpleWorker (burst mode, in this process)."""

    def run() -> None:
        SimpleWorker([queue], connection=queue.connection).work(burst=True)

    return run

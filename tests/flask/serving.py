"""Serve a Flask app with werkzeug's real server in a thread on 127.0.0.1:0."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import flask
from werkzeug.serving import make_server


@contextmanager
def serving(app: flask.Flask) -> Iterator[str]:
    """Yields the base URL (``http://127.0.0.1:PORT``); shuts the server down afterwards."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="flask-under-test", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""The kit blueprint serves the committed bundle from the Python package, revalidated by ETag."""

from __future__ import annotations

import flask
from jobtrail.flask import browser_kit_blueprint
from jobtrail.flask.browser_kit import browser_kit_bundle


def kit_client():
    app = flask.Flask(__name__)
    app.register_blueprint(browser_kit_blueprint())
    return app.test_client()


def test_serves_the_bundle_as_javascript():
    response = kit_client().get("/jobtrail/jobtrail.js")

    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.get_data() == browser_kit_bundle()
    assert b"var jobtrail=" in response.get_data()


def test_unchanged_bundle_revalidates_with_304():
    client = kit_client()
    etag = client.get("/jobtrail/jobtrail.js").headers["ETag"]

    again = client.get("/jobtrail/jobtrail.js", headers={"If-None-Match": etag})

    assert again.status_code == 304
    assert again.get_data() == b""

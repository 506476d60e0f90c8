"""Serves the bundled browser kit (built from instrumentation/browser/ into ``jobtrail/flask/static/``)."""

from __future__ import annotations

from importlib import resources

import werkzeug

import flask

KIT_PATH = "/jobtrail/jobtrail.js"


def browser_kit_bundle() -> bytes:
    """The committed esbuild bundle that ships inside the ``jobtrail.flask`` package."""
    return resources.files("jobtrail.flask").joinpath("static").joinpath("jobtrail.js").read_bytes()


def browser_kit_blueprint() -> flask.Blueprint:
    """``GET /jobtrail/jobtrail.js``: the kit, revalidated by ETag so an upgrade reaches pages at once."""
    blueprint = flask.Blueprint("jobtrail_browser_kit", __name__)
    bundle = browser_kit_bundle()

    @blueprint.get(KIT_PATH)
    def kit() -> werkzeug.Response:
        response = flask.Response(bundle, content_type="text/javascript; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.add_etag()
        return response.make_conditional(flask.request)

    return blueprint

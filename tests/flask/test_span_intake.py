"""Span intake: OTLP/JSON from the page, checked, then forwarded with nothing but a content type."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

import flask
import pytest
from jobtrail.flask import instrument_app, span_intake_blueprint

from tests.flask.serving import serving

OTLP_BODY = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "click"}]}]}]}).encode()
SITE = "http://shop.local"


def intake_client(forward_to: str, **options):
    app = flask.Flask(__name__)
    instrument_app(app)
    app.register_blueprint(span_intake_blueprint(forward_to, **options))
    return app.test_client()


def post(client, body=OTLP_BODY, content_type="application/json", **headers):
    return client.post("/v1/traces", data=body, content_type=content_type, base_url=SITE, headers=headers)


def test_forwards_the_body_and_only_a_content_type(http_receiver):
    recorder, url = http_receiver.recorder, http_receiver.url
    client = intake_client(url)

    response = post(
        client,
        Origin=SITE,
        Cookie="session=secret",
        Authorization="Bearer secret",
        **{"X-Api-Key": "secret", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )

    assert response.status_code == 200
    (delivery,) = recorder.deliveries
    assert delivery.path == "/v1/traces"
    assert delivery.body == OTLP_BODY
    forwarded = {name.lower() for name in delivery.headers}
    assert forwarded <= {"content-type", "content-length", "host", "user-agent", "accept-encoding", "connection"}
    assert delivery.headers["Content-Type"] == "application/json"
    assert "secret" not in json.dumps(delivery.headers)


def test_same_origin_without_origin_header_is_accepted(http_receiver):
    recorder, url = http_receiver.recorder, http_receiver.url
    assert post(intake_client(url + "/v1/traces")).status_code == 200
    assert len(recorder.deliveries) == 1


def test_relays_the_collector_status_and_body(http_receiver):
    url = http_receiver.url
    answer = b'{"partialSuccess":{"rejectedSpans":"1"}}'
    http_receiver.script = [(400, {}, answer)]

    response = post(intake_client(url))

    assert response.status_code == 400
    assert response.get_data() == answer


@pytest.mark.parametrize("status", [429, 503])
def test_relays_the_collector_retry_after(http_receiver, status):
    http_receiver.script = [(status, {"Retry-After": "7"}, b"{}")]

    response = post(intake_client(http_receiver.url))

    assert response.status_code == status
    assert response.headers["Retry-After"] == "7"


def test_no_retry_after_is_made_up(http_receiver):
    response = post(intake_client(http_receiver.url))
    assert response.status_code == 200 and "Retry-After" not in response.headers


def test_foreign_origin_is_refused_and_nothing_forwarded(http_receiver):
    recorder, url = http_receiver.recorder, http_receiver.url

    response = post(intake_client(url), Origin="http://evil.example")

    assert response.status_code == 403
    assert response.get_json()["error"]["reason"] == "origin_not_allowed"
    assert recorder.deliveries == []


def test_allowed_origin_gets_cors_headers(http_receiver):
    recorder, url = http_receiver.recorder, http_receiver.url
    client = intake_client(url, allowed_origins=["http://app.example"])

    preflight = client.options(
        "/v1/traces", base_url=SITE, headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    )
    response = post(client, Origin="http://app.example")

    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert len(recorder.deliveries) == 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-protobuf", "multipart/form-data; boundary=x"])
def test_wrong_content_type_is_415(http_receiver, content_type):
    recorder, url = http_receiver.recorder, http_receiver.url

    response = post(intake_client(url), content_type=content_type)

    assert response.status_code == 415
    assert response.get_json()["error"]["reason"] == "unsupported_media_type"
    assert recorder.deliveries == []


def test_json_with_charset_is_accepted(http_receiver):
    url = http_receiver.url
    assert post(intake_client(url), content_type="application/json; charset=utf-8").status_code == 200


def test_oversized_body_is_413(http_receiver):
    recorder, url = http_receiver.recorder, http_receiver.url
    client = intake_client(url, max_bytes=1024)
    big = json.dumps({"resourceSpans": [], "pad": "x" * 2000}).encode()

    response = post(client, body=big)

    assert response.status_code == 413
    assert response.get_json()["error"]["reason"] == "payload_too_large"
    assert recorder.deliveries == []


def test_oversized_chunked_body_is_413(http_receiver):
    recorder, url = http_receiver.recorder, http_receiver.url
    app = flask.Flask(__name__)
    app.register_blueprint(span_intake_blueprint(url, max_bytes=1024))
    chunks = [b'{"pad": "', b"x" * 2000, b'"}']

    with serving(app) as base_url:
        connection = http.client.HTTPConnection(urlsplit(base_url).netloc, timeout=30)
        connection.request(
            "POST", "/v1/traces", body=iter(chunks), headers={"Content-Type": "application/json"}, encode_chunked=True
        )
        answer = connection.getresponse()
        status, body = answer.status, json.loads(answer.read())
        connection.close()

    assert status == 413
    assert body["error"]["reason"] == "payload_too_large"
    assert recorder.deliveries == []


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b"", b'"string"', b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}"],
    ids=["not-json", "array", "empty", "string", "nested-50k-deep"],
)
def test_body_that_is_not_an_otlp_object_is_400(http_receiver, body):
    recorder, url = http_receiver.recorder, http_receiver.url

    response = post(intake_client(url), body=body)

    assert response.status_code == 400
    assert response.get_json()["error"]["reason"] == "invalid_otlp_json"
    assert recorder.deliveries == []


def test_unreachable_collector_is_502():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    response = post(intake_client(f"http://127.0.0.1:{closed_port}"))

    assert response.status_code == 502
    assert response.get_json()["error"]["reason"] == "collector_unreachable"


@pytest.mark.parametrize("forward_to", ["127.0.0.1:4318", "file:///tmp/spans", "ftp://host/v1/traces"])
def test_forward_to_must_be_an_http_url(forward_to):
    with pytest.raises(ValueError):
        span_intake_blueprint(forward_to)


def test_forwards_to_the_otlp_endpoint_the_environment_configures(http_receiver, monkeypatch):
    recorder, url = http_receiver.recorder, http_receiver.url
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url + "/")

    assert post(intake_client(None)).status_code == 200
    assert [delivery.path for delivery in recorder.deliveries] == ["/v1/traces"]


def test_the_traces_endpoint_variable_is_used_as_given(http_receiver, monkeypatch):
    recorder, url = http_receiver.recorder, http_receiver.url
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/elsewhere")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url + "/collector/traces")

    assert post(intake_client(None)).status_code == 200
    assert [delivery.path for delivery in recorder.deliveries] == ["/collector/traces"]


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"])
def test_a_grpc_only_configuration_needs_an_explicit_forward_to(monkeypatch, variable):
    monkeypatch.setenv(variable, "grpc")
    with pytest.raises(ValueError, match="forward_to"):
        span_intake_blueprint()

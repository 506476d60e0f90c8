"""``jobtrail trail`` as support runs it: the installed console script, in its own process, on a real processor's
file; words, JSON fields and exit codes (0 found, 1 not found, 2 unreadable source or bad input)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from jobtrail.conventions import ATTR_REQUEST_ID, REQUEST_ID_BAGGAGE_KEY
from jobtrail.rq import RQInstrumentor
from jobtrail.trail import cli
from jobtrail.trail.sources import SourceError
from opentelemetry import baggage, context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from rq import Queue, Retry, SimpleWorker

from tests.rq.jobs import add, fail_first
from tests.trail.scenario import emit_action

JOBTRAIL = Path(sys.executable).with_name("jobtrail")
EXIT_BROKEN_PIPE = 141


def run_trail(*args: str, cwd: Path | None = None, trace_file_env: str | None = None) -> subprocess.CompletedProcess:
    """``jobtrail trail ...`` from the virtualenv, as a separate process; ``JOBTRAIL_TRACE_FILE`` only when given."""
    assert JOBTRAIL.exists(), f"{JOBTRAIL} missing: install the package (pip install -e .)"
    env = {key: value for key, value in os.environ.items() if key != cli.TRACE_FILE_ENV}
    if trace_file_env is not None:
        env[cli.TRACE_FILE_ENV] = trace_file_env
    return subprocess.run(
        [str(JOBTRAIL), "trail", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60, check=False
    )


def test_the_console_script_tells_the_trail_and_takes_ids_in_any_case(stitched_file) -> None:
    path, emitted = stitched_file
    result = run_trail(emitted.request_id, "--file", str(path), "--utc")
    assert result.returncode == 0, result.stderr
    assert f"trail of {emitted.request_id} (trace {emitted.request_trace_id})" in result.stdout
    assert result.stdout.count("failed: SMTPAuthenticationError; retry scheduled") == 2
    assert "attempt 3 picked up at 10:14:11 after 0.1 s in queue, succeeded in 0.60 s" in result.stdout
    assert "first broken step: nothing is broken: job job-84721 succeeded on attempt 3 after 2 failed" in result.stdout
    shouted = run_trail(emitted.request_id.upper(), "--file", str(path), "--utc")
    assert shouted.returncode == 0, shouted.stderr
    assert shouted.stdout.splitlines()[1:] == result.stdout.splitlines()[1:]
    by_trace = run_trail(emitted.attempt_trace_ids[2].upper(), "--file", str(path), "--utc")
    assert by_trace.returncode == 0 and "attempt 3 picked up" in by_trace.stdout


def test_json_has_fields_per_step(stitched_file) -> None:
    path, emitted = stitched_file
    result = run_trail(emitted.job_id, "--file", str(path), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["found"], document["query"], document["looked_up_as"]) == (True, emitted.job_id, ["job_id"])
    assert document["source"] == str(path)
    assert document["trace_ids"] == [emitted.request_trace_id]
    assert document["jobs"] == [
        {"job_id": emitted.job_id, "queue": "emails", "final_state": "succeeded", "attempts": 3, "next_run_at": None}
    ]
    attempts = [entry for entry in document["entries"] if entry["kind"] == "attempt"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "retry_scheduled"),
        (2, "retry_scheduled"),
        (3, "succeeded"),
    ]
    assert attempts[0]["error_type"] == "smtplib.SMTPAuthenticationError"
    assert attempts[0]["next_run_at"] == "2026-11-22T10:14:08+00:00"
    assert all(a["trace_id"] == emitted.request_trace_id and a["job_id"] == emitted.job_id for a in attempts)
    steps = [entry for entry in document["entries"] if entry["kind"] == "step"]
    assert [step["failed"] for step in steps] == [True, True, False]
    assert document["first_broken_step"]["step"] == "nothing is broken"


def test_not_found_is_exit_1_with_an_answer_in_json_too(stitched_file) -> None:
    path, _ = stitched_file
    text = run_trail("req_ffffffffffffffff", "--file", str(path))
    assert (text.returncode, text.stdout) == (1, "")
    assert f"nothing in {path} holds request id req_ffffffffffffffff" in text.stderr
    as_json = run_trail("no-such-job", "--file", str(path), "--json")
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)
    assert document["found"] is False and document["looked_up_as"] == ["job_id"]
    assert document["error"] == f"nothing in {path} holds job id no-such-job"


def test_an_unreadable_source_or_empty_id_is_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "absent.jsonl"
    result = run_trail("req_0123456789abcdef", "--file", str(missing), "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "query": "req_0123456789abcdef",
        "looked_up_as": ["request_id"],
        "source": str(missing),
        "found": False,
        "error": f"no trace file at {missing} (is the demo or the processor's file export running?)",
    }
    blank = run_trail(" ", "--file", str(missing))
    assert blank.returncode == 2 and "give a request id" in blank.stderr


def test_a_32_hex_job_id_from_an_idempotency_key_is_found(processor_file) -> None:
    job_id = uuid.uuid4().hex
    emit_action(processor_file.processor, job_id=job_id, failures=0)
    path = processor_file.finish()
    result = run_trail(job_id.upper(), "--file", str(path), "--json")
    assert result.returncode == 0, result.stdout
    document = json.loads(result.stdout)
    assert document["looked_up_as"] == ["trace_id", "job_id"]
    assert document["job_ids"] == [job_id]
    assert document["final_state"] == "succeeded"


def test_the_file_is_found_from_the_environment_or_the_demo_data_dir(stitched_file, tmp_path: Path) -> None:
    path, emitted = stitched_file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from_env = run_trail(emitted.request_id, cwd=elsewhere, trace_file_env=str(path))
    assert from_env.returncode == 0, from_env.stderr
    assert "attempt 3 picked up" in from_env.stdout
    checkout = tmp_path / "checkout"
    (checkout / cli.DEMO_TRACE_FILE).parent.mkdir(parents=True)
    shutil.copy(path, checkout / cli.DEMO_TRACE_FILE)
    from_demo_dir = run_trail(emitted.request_id, "--json", cwd=checkout)
    assert from_demo_dir.returncode == 0, from_demo_dir.stdout
    assert json.loads(from_demo_dir.stdout)["source"] == str(checkout / cli.DEMO_TRACE_FILE)
    missing = tmp_path / "nowhere.jsonl"
    not_there = run_trail(emitted.request_id, cwd=elsewhere, trace_file_env=str(missing))
    assert not_there.returncode == 2
    assert f"no trace file found (looked in {missing}); pass --file PATH or set JOBTRAIL_TRACE_FILE" in not_there.stderr


def test_without_a_file_the_message_names_every_place_it_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(cli.TRACE_FILE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "checkout" / ".venv"))
    expected = [tmp_path / cli.DEMO_TRACE_FILE, tmp_path / "checkout" / cli.DEMO_TRACE_FILE]
    assert cli.trace_file_candidates() == expected
    with pytest.raises(SourceError) as raised:
        cli.default_file_source()
    assert str(raised.value).startswith(f"no trace file found (looked in {expected[0]}, {expected[1]})")
    expected[1].parent.mkdir(parents=True)
    expected[1].write_text("")
    assert cli.default_file_source().path == str(expected[1]), "the checkout whose virtualenv runs the command"


def test_a_closed_pipe_ends_quietly(stitched_file) -> None:
    path, emitted = stitched_file
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line, as with `| head -0`
    try:
        process = subprocess.run(
            [str(JOBTRAIL), "trail", emitted.request_id, "--file", str(path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert process.returncode == EXIT_BROKEN_PIPE
    assert "Traceback" not in process.stderr and "BrokenPipeError" not in process.stderr, process.stderr


def test_enqueue_many_with_real_rq_tells_each_job(processor_file, redis_conn) -> None:
    """Two jobs of one ``Queue.enqueue_many`` call, run by a real SimpleWorker, through a real processor."""
    provider = TracerProvider(resource=Resource.create({"service.name": "batch-test"}), shutdown_on_exit=False)
    provider.add_span_processor(processor_file.processor)
    instrumentor = RQInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    request_id = "req_00000000000000e1"
    queue = Queue(f"batch-{uuid.uuid4().hex[:8]}", connection=redis_conn)
    try:
        token = context.attach(baggage.set_baggage(REQUEST_ID_BAGGAGE_KEY, request_id))
        try:
            tracer = provider.get_tracer("tests.trail")
            with tracer.start_as_current_span(
                "POST /batch", kind=SpanKind.SERVER, attributes={ATTR_REQUEST_ID: request_id}
            ):
                jobs = queue.enqueue_many([Queue.prepare_data(add, (1, 2)), Queue.prepare_data(add, (3, 4))])
        finally:
            context.detach(token)
        SimpleWorker([queue], connection=redis_conn).work(burst=True)
    finally:
        instrumentor.uninstrument()
    assert [job.get_status(refresh=True) for job in jobs] == ["finished", "finished"]
    path = processor_file.finish()
    trail = run_trail(request_id, "--file", str(path), "--json")
    assert trail.returncode == 0, trail.stdout
    document = json.loads(trail.stdout)
    assert sorted(document["job_ids"]) == sorted(job.id for job in jobs)
    assert [job["final_state"] for job in document["jobs"]] == ["succeeded", "succeeded"]
    assert document["first_broken_step"]["step"] == "nothing is broken"
    assert len(document["trace_ids"]) == 1, "the attempts were stitched into the request's trace"
    words = run_trail(request_id, "--file", str(path)).stdout
    assert "never picked up" not in words
    for job in jobs:
        assert f"job {job.id} succeeded" in words
        by_job = run_trail(job.id, "--file", str(path), "--json")
        assert by_job.returncode == 0, by_job.stdout
        assert job.id in json.loads(by_job.stdout)["job_ids"]


def test_the_dispatcher_names_an_unknown_command() -> None:
    result = subprocess.run([str(JOBTRAIL), "nope"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "unknown command 'nope'" in result.stderr


def test_the_command_the_demo_prints_works_from_the_checkout(stitched_file, monkeypatch) -> None:
    """``./dev demo`` runs the venv's python in the checkout: the banner's command must run there as printed."""
    path, emitted = stitched_file
    checkout = Path(sys.prefix).resolve().parent
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the virtualenv is not activated
    monkeypatch.delenv(cli.TRACE_FILE_ENV, raising=False)
    script = JOBTRAIL.resolve().relative_to(checkout)
    assert cli.trail_command(path) == f"{script} trail <reference> --file {path}"
    assert cli.trail_command(Path(cli.DEMO_TRACE_FILE)) == f"{script} trail <reference>", "the default needs no --file"
    command = cli.trail_command(path).replace("<reference>", emitted.request_id).split()
    result = subprocess.run(command, capture_output=True, text=True, cwd=checkout, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "attempt 3 picked up" in result.stdout


def test_a_real_retry_not_yet_run_is_pending_then_overdue(processor_file, redis_conn) -> None:
    """A real attempt fails and RQ schedules the retry; with no scheduler running, the trail says so."""
    provider = TracerProvider(resource=Resource.create({"service.name": "retry-test"}), shutdown_on_exit=False)
    provider.add_span_processor(processor_file.processor)
    instrumentor = RQInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    queue = Queue(f"retry-{uuid.uuid4().hex[:8]}", connection=redis_conn)
    try:
        job = queue.enqueue(fail_first, f"test:calls:{uuid.uuid4().hex}", 1, retry=Retry(max=1, interval=1))
        SimpleWorker([queue], connection=redis_conn).work(burst=True)  # no scheduler: the retry stays scheduled
    finally:
        instrumentor.uninstrument()
    assert job.get_status(refresh=True) == "scheduled"
    path = processor_file.finish()

    pending = json.loads(run_trail(job.id, "--file", str(path), "--json", "--utc").stdout)
    (summary,) = pending["jobs"]
    due = datetime.fromisoformat(summary["next_run_at"])
    assert summary["final_state"] == "retry pending", "due a second after the attempt: far from 5 minutes late"
    assert pending["first_broken_step"]["text"] == f"not finished yet: attempt 2 scheduled at {due:%H:%M:%S}"
    while datetime.now(timezone.utc) < due + timedelta(seconds=1):
        time.sleep(0.1)
    overdue = run_trail(job.id, "--file", str(path), "--utc", "--overdue-after", "0.01")
    assert overdue.returncode == 0, overdue.stderr
    assert (
        f"first broken step: the background job did not finish: job {job.id}: attempt 2 was due at {due:%H:%M:%S}"
        in (overdue.stdout)
    )

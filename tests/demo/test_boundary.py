"""The boundary: request handlers validate and enqueue; they never run a job function and never start a thread.

Checked twice: on the source (the demo API and every module of the Flask layer, by AST), and at run time
(every demo route answered through the Flask test client while threads, ``Job.perform`` and the demo's job
functions refuse to run).
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
from jobtrail.demo import api, jobs
from jobtrail.demo.settings import DemoSettings
from rq.job import Job

ROOT = Path(__file__).resolve().parents[2]
HANDLER_MODULES = [
    ROOT / "demo_app/src/jobtrail/demo/api.py",
    *sorted((ROOT / "instrumentation/src/jobtrail/flask").glob("*.py")),
]
CONCURRENCY_MODULES = {"threading", "_thread", "multiprocessing", "concurrent", "subprocess", "asyncio"}
JOB_FUNCTIONS = {name for name in dir(jobs) if callable(getattr(jobs, name)) and not name.startswith("_")}


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", HANDLER_MODULES, ids=lambda path: path.name)
def test_handler_modules_import_nothing_that_runs_work_concurrently(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    assert imported_modules(tree) & CONCURRENCY_MODULES == set()


@pytest.mark.parametrize("path", HANDLER_MODULES, ids=lambda path: path.name)
def test_handler_modules_never_call_a_job_function_or_perform_a_job(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    called = {func.attr for func in calls if isinstance(func, ast.Attribute)} | {
        func.id for func in calls if isinstance(func, ast.Name)
    }
    assert called & (JOB_FUNCTIONS | {"perform", "_execute", "execute_job", "work"}) == set()
    if path.name == "api.py":
        referenced = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "jobs"
        }
        assert referenced == {"generate_report", "send_refund_receipt", "import_files"}, "only handed to accept()"


def test_at_run_time_no_route_runs_a_job_or_starts_a_thread(monkeypatch, redis_conn, redis_url) -> None:
    ran: list[str] = []

    def refuse(what: str):
        def refused(*_args, **_kwargs):
            ran.append(what)
            raise AssertionError(f"a request handler ran {what}")

        return refused

    monkeypatch.setattr(threading.Thread, "start", refuse("a thread"))
    monkeypatch.setattr(Job, "perform", refuse("Job.perform"))
    for name in ("generate_report", "send_refund_receipt", "import_files"):
        monkeypatch.setattr(jobs, name, refuse(name))
    settings = DemoSettings(redis_url=redis_url, span_intake_forward_to="http://127.0.0.1:9/v1/traces")
    client = api.create_app(settings, redis_conn).test_client()
    files = {"files": [{"name": "a.csv", "content": "refund_id,amount\nRF-1,2\n"}]}
    receipt = {"refund_id": "RF-1042", "email": "customer@example.com", "amount_cents": 4250}
    answers = [
        client.get("/"),
        client.get("/healthz"),
        client.put("/api/email-provider", json={"down": False}),
    ]
    for url, body in (("/api/reports", {"period": "2026-11"}), ("/api/receipts", receipt), ("/api/imports", files)):
        accepted = client.post(url, json=body)
        assert accepted.status_code == 202
        status_url = accepted.get_json()["status_url"]
        answers += [client.get(status_url), client.get(f"/api/jobs/{accepted.get_json()['job_id']}/result")]
        answers.append(client.post(f"{status_url}/cancel"))
    assert ran == []
    assert all(answer.status_code < 500 for answer in answers)

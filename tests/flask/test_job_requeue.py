"""Operator repair: ``jobtrail jobs requeue <job id> [--failed-items-only]`` on real Redis and a real worker."""

from __future__ import annotations

import pytest
from jobtrail.cli import main as jobtrail_main
from jobtrail.conventions import (
    EVENT_JOB_FAILED_FINAL,
    EVENT_JOB_REQUEUED,
    EVENT_JOB_STARTED,
    STATE_FAILED,
    STATE_PARTIALLY_SUCCEEDED,
    STATE_QUEUED,
    STATE_SUCCEEDED,
)

from tests.flask.tasks import items_run_count


@pytest.fixture
def jobs_cli(redis_url, capsys):
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = jobtrail_main(["jobs", "--redis-url", redis_url, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_requeue_of_a_failed_job_starts_a_new_run_whose_attempts_continue(client, run_jobs, jobs_cli):
    accepted = client.post("/failing-receipts?retries=1").get_json()
    run_jobs()
    assert client.get(accepted["status_url"]).get_json()["state"] == STATE_FAILED

    code, out, _err = jobs_cli("requeue", accepted["job_id"])

    assert code == 0 and out == f"job {accepted['job_id']} requeued: run 2, next attempt 3\n"
    body = client.get(accepted["status_url"]).get_json()
    assert (body["state"], body["terminal"]) == (STATE_QUEUED, False)
    assert body["events"][-1]["event"] == EVENT_JOB_REQUEUED
    run_jobs()
    body = client.get(accepted["status_url"]).get_json()
    starts = [event["attempt"] for event in body["events"] if event["event"] == EVENT_JOB_STARTED]
    assert starts == [1, 2, 3, 4], "the requeued run has its full retry budget again, numbered after the first run"
    assert (body["state"], body["attempt"]) == (STATE_FAILED, 4)
    assert [event["event"] for event in body["events"]].count(EVENT_JOB_FAILED_FINAL) == 2


def test_requeue_failed_items_only_re_runs_only_what_did_not_succeed(client, run_jobs, jobs_cli, redis_conn):
    accepted = client.post("/import", json={"rows": {"a.csv": "ok", "b.csv": "flaky"}}).get_json()
    run_jobs()
    assert client.get(accepted["status_url"]).get_json()["state"] == STATE_PARTIALLY_SUCCEEDED

    code, out, _err = jobs_cli("requeue", accepted["job_id"], "--failed-items-only")
    assert code == 0 and out.endswith("1 item(s) to run\n")
    run_jobs()

    body = client.get(accepted["status_url"]).get_json()
    assert (body["state"], body["attempt"]) == (STATE_SUCCEEDED, 2)
    assert items_run_count(redis_conn, accepted["job_id"], "a.csv") == 1
    assert items_run_count(redis_conn, accepted["job_id"], "b.csv") == 2
    assert [(item["id"], item["state"], item["attempts"]) for item in body["items"]] == [
        ("a.csv", "succeeded", 1),
        ("b.csv", "succeeded", 2),
    ]


def test_requeue_without_the_flag_re_runs_every_item(client, run_jobs, jobs_cli, redis_conn):
    accepted = client.post("/import", json={"rows": {"a.csv": "ok", "b.csv": "flaky"}}).get_json()
    run_jobs()
    jobs_cli("requeue", accepted["job_id"])
    run_jobs()
    assert items_run_count(redis_conn, accepted["job_id"], "a.csv") == 2
    assert client.get(accepted["status_url"]).get_json()["state"] == STATE_SUCCEEDED


def test_requeue_refuses_what_it_cannot_repair(client, run_jobs, jobs_cli):
    succeeded = client.post("/receipts", json={"order_id": "1"}).get_json()
    queued = client.post("/receipts", json={"order_id": "2"}).get_json()
    run_jobs()
    pending = client.post("/receipts", json={"order_id": "3"}).get_json()

    code, _out, err = jobs_cli("requeue", succeeded["job_id"])
    assert code == 1 and "is succeeded: only failed or partially succeeded jobs can be requeued" in err
    assert jobs_cli("requeue", pending["job_id"])[0] == 1
    assert jobs_cli("requeue", "no-such-job")[0] == 1
    assert client.get(queued["status_url"]).get_json()["state"] == STATE_SUCCEEDED


def test_requeue_with_redis_unreachable_exits_2(capsys):
    code = jobtrail_main(["jobs", "--redis-url", "redis://127.0.0.1:1/0", "requeue", "some-job"])
    assert code == 2 and "refused" in capsys.readouterr().err

"""``pollJob`` in headless Chromium against scripted status answers: what fires ``onState``, and due times."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.flask.sample_app import create_app
from tests.flask.serving import serving

pytestmark = [pytest.mark.slow, pytest.mark.browser]

STATUS_URL = "/scripted-status"


@pytest.fixture
def kit_page(page, queue):
    with serving(create_app(queue)) as base_url:
        page.goto(base_url)
        yield page


def status(state: str, attempt: int = 1, **fields) -> dict:
    return {"state": state, "attempt": attempt, "next_run_at": None, "stage": None, "progress": None, **fields}


def script_answers(page, answers: list[dict]) -> list[int]:
    """Serve ``answers`` one per poll (the last one again afterwards); returns the list of served indexes."""
    served: list[int] = []

    def answer(route):
        index = min(len(served), len(answers) - 1)
        served.append(index)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answers[index]))

    page.route(f"**{STATUS_URL}", answer)
    return served


def poll(page, **options) -> list[dict]:
    """Run pollJob to the end; the statuses onState saw, in order."""
    return page.evaluate(
        """async (options) => {
            const seen = [];
            await jobtrail.pollJob(options.url, { ...options, onState: (s) => seen.push(s) });
            return seen;
        }""",
        {"url": STATUS_URL, "initialDelayMs": 10, "maxDelayMs": 20, **options},
    )


def test_on_state_fires_on_attempt_stage_and_progress_changes_not_on_repeats(kit_page):
    answers = [
        status("started", 1),
        status("started", 1),
        status("started", 2),
        status("started", 2, stage="loading"),
        status("started", 2, stage="loading", progress={"done": 1, "total": 3}),
        status("started", 2, stage="loading", progress={"done": 1, "total": 3}),
        status("started", 2, stage="loading", progress={"done": 2, "total": 3}),
        status("partially_succeeded", 2, stage="loading", progress={"done": 2, "total": 3}),
    ]
    served = script_answers(kit_page, answers)

    seen = poll(kit_page)

    assert [(s["state"], s["attempt"], s["stage"], s["progress"]) for s in seen] == [
        ("started", 1, None, None),
        ("started", 2, None, None),
        ("started", 2, "loading", None),
        ("started", 2, "loading", {"done": 1, "total": 3}),
        ("started", 2, "loading", {"done": 2, "total": 3}),
        ("partially_succeeded", 2, "loading", {"done": 2, "total": 3}),
    ]
    assert len(served) == len(answers), "partially_succeeded is terminal: polling stopped there"


def test_a_due_time_in_the_past_is_never_handed_out_as_the_next_run(kit_page):
    past = (datetime.now(timezone.utc) - timedelta(seconds=30)).isoformat()
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    script_answers(
        kit_page,
        [
            status("scheduled", 1, next_run_at=future),
            status("scheduled", 1, next_run_at=past),
            status("failed", 2),
        ],
    )

    seen = poll(kit_page)

    assert [(s["state"], s["next_run_at"]) for s in seen] == [
        ("scheduled", future),
        ("scheduled", None),
        ("failed", None),
    ]


def test_the_next_run_time_changing_alone_fires_on_state(kit_page):
    first = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    second = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    script_answers(
        kit_page,
        [status("scheduled", 1, next_run_at=first), status("scheduled", 2, next_run_at=second), status("succeeded", 3)],
    )
    assert [s["next_run_at"] for s in poll(kit_page)] == [first, second, None]


def test_it_looks_again_just_after_a_due_time_instead_of_waiting_out_its_backoff(kit_page):
    """A backoff of a minute, a retry due in a moment: the second poll comes right after the due time."""
    due = (datetime.now(timezone.utc) + timedelta(milliseconds=300)).isoformat()
    served = script_answers(kit_page, [status("scheduled", 1, next_run_at=due), status("succeeded", 2)])

    seen = kit_page.evaluate(
        """async (url) => {
            const seen = [];
            const timeout = new Promise((resolve) => setTimeout(() => resolve('timed out'), 5000));
            const onState = (s) => seen.push(s.state);
            const polled = jobtrail.pollJob(url, { initialDelayMs: 60000, maxDelayMs: 60000, onState });
            return [await Promise.race([polled.then(() => 'done'), timeout]), seen];
        }""",
        STATUS_URL,
    )

    assert seen == ["done", ["scheduled", "succeeded"]]
    assert len(served) == 2


def test_a_retry_just_overdue_gets_one_quick_look_and_a_long_overdue_one_no_hot_loop(kit_page):
    """A due time that passed while the answer travelled still means 'look again soon'; one long past, the backoff."""
    just_due = (datetime.now(timezone.utc) - timedelta(milliseconds=100)).isoformat()
    served = script_answers(kit_page, [status("scheduled", 1, next_run_at=just_due), status("succeeded", 2)])
    finished = kit_page.evaluate(
        """async (url) => {
            const timeout = new Promise((resolve) => setTimeout(() => resolve('timed out'), 5000));
            const polled = jobtrail.pollJob(url, { initialDelayMs: 60000, maxDelayMs: 60000 });
            return await Promise.race([polled.then((s) => s.state), timeout]);
        }""",
        STATUS_URL,
    )
    assert finished == "succeeded" and len(served) == 2

    kit_page.unroute(f"**{STATUS_URL}")
    long_past = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    served = script_answers(kit_page, [status("scheduled", 1, next_run_at=long_past)])
    kit_page.evaluate(
        """async (url) => {
            const stop = new AbortController();
            setTimeout(() => stop.abort(), 1500);
            const options = { initialDelayMs: 1000, maxDelayMs: 1000, signal: stop.signal };
            await jobtrail.pollJob(url, options).catch(() => null);
        }""",
        STATUS_URL,
    )
    assert 2 <= len(served) <= 3, served  # the first answer, one quick look, at most one backoff later

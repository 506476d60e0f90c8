"""The kit refuses misuse with clear errors, and a bare fetch outside an action is not its child."""

from __future__ import annotations

import pytest

from tests.flask.sample_app import create_app
from tests.flask.serving import serving

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def kit_page(page, queue, http_receiver):
    receiver_url = http_receiver.url
    with serving(create_app(queue, forward_to=f"{receiver_url}/v1/traces")) as base_url:
        page.goto(base_url)
        yield page


def error_of(page, script: str) -> str:
    return page.evaluate(
        f"(async () => {{ try {{ await ({script}); return 'no error'; }} catch (e) {{ return e.message; }} }})()"
    )


def test_misuse_is_refused_with_a_clear_message(kit_page):
    assert "already initialised" in error_of(kit_page, "jobtrail.init({serviceName: 'x', screen: 'y'})")
    assert "no action has started" in error_of(kit_page, "jobtrail.result('Sent', 'succeeded')")
    bad_state = "jobtrail.action('send', async ({result}) => result('Sent', 'done'))"
    assert "state must be one of running, succeeded, failed, got done" in error_of(kit_page, bad_state)


def test_action_hands_out_a_fresh_request_id_each_time(kit_page):
    ids = kit_page.evaluate(
        "Promise.all([1, 2, 3].map(() => jobtrail.action('noop', async ({requestId}) => requestId)))"
    )
    assert len(set(ids)) == 3
    assert all(request_id.startswith("req_") and len(request_id) == 20 for request_id in ids)


def test_a_failing_action_rejects_with_the_error(kit_page):
    message = error_of(kit_page, "jobtrail.action('boom', async () => { throw new Error('kaput'); })")
    assert message == "kaput"


def test_a_result_after_the_action_ended_is_refused_not_lost(kit_page):
    script = "jobtrail.action('send', async () => 'done').then(() => jobtrail.result('Sent', 'succeeded'))"
    assert error_of(kit_page, script) == (
        'jobtrail.result: the action "send" has ended; record its result inside its fn'
    )


@pytest.mark.parametrize(
    ("url", "status"),
    [("/receipts", 405), ("/no-such-page", 404)],
)
def test_poll_rejects_an_answer_that_is_no_job_status_instead_of_polling_forever(kit_page, url, status):
    message = error_of(kit_page, f"jobtrail.pollJob({url!r})")
    assert message == f"jobtrail.pollJob: {url} answered {status} without a job status"


def test_request_id_goes_only_where_traceparent_may_go(kit_page):
    seen = []

    def answer(route):
        seen.append(route.request.headers)
        route.fulfill(status=200, body="{}", headers={"Access-Control-Allow-Origin": "*"})

    kit_page.route("http://elsewhere.test/**", answer)
    outcome = kit_page.evaluate(
        "jobtrail.action('ask elsewhere', async ({fetch}) => (await fetch('http://elsewhere.test/ping')).status)"
    )

    assert outcome == 200
    (headers,) = seen
    assert "x-request-id" not in headers and "traceparent" not in headers

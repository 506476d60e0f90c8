"""A small product on the public API only: the Flask side of the tests (and of the browser test's page)."""

from __future__ import annotations

from flask import Flask, request
from jobtrail.conventions import REQUEST_ID_BAGGAGE_KEY
from jobtrail.flask import JobContract, browser_kit_blueprint, instrument_app, refuse, span_intake_blueprint
from opentelemetry import baggage
from rq import Queue, Retry

from tests.flask import tasks

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Receipts</title>
<script src="/jobtrail/jobtrail.js"></script></head>
<body>
<button id="send">Send refund receipt</button>
<button id="send-and-wait">Send and wait</button>
<p id="result"></p>
<script>
jobtrail.init({serviceName: "receipts-page", screen: "Order 1042"});
window.seenStates = [];
const show = (text) => { document.getElementById("result").textContent = text; };
async function sendReceipt(fetch, result) {
  const answer = await fetch("/receipts", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({order_id: "1042"}),
  });
  window.acceptedJob = await answer.json();
  result("Receipt queued", "running");
  return window.acceptedJob;
}
document.getElementById("send").addEventListener("click", () => {
  jobtrail.action("Send refund receipt", ({fetch, result}) => sendReceipt(fetch, result)).then(() => show("queued"));
});
document.getElementById("send-and-wait").addEventListener("click", () => {
  jobtrail.action("Send refund receipt and wait", async ({fetch, result}) => {
    const accepted = await sendReceipt(fetch, result);
    const final = await jobtrail.pollJob(accepted.status_url, {
      fetch, initialDelayMs: 50, maxDelayMs: 400, onState: (status) => window.seenStates.push(status.state),
    });
    jobtrail.result("Receipt " + final.state, final.state === "succeeded" ? "succeeded" : "failed");
    return final;
  }).then((final) => show(final.state));
});
</script>
</body></html>
"""


def create_app(queue: Queue, *, forward_to: str | None = None) -> Flask:
    app = Flask(__name__)
    instrument_app(app)
    app.register_blueprint(browser_kit_blueprint())
    if forward_to is not None:
        app.register_blueprint(span_intake_blueprint(forward_to))
    jobs = JobContract(queue, status_endpoint="job_status")

    @app.get("/")
    def page() -> str:
        return PAGE

    @app.post("/receipts")
    def send_receipt():
        order_id = (request.get_json(silent=True) or {}).get("order_id")
        if not isinstance(order_id, str) or not order_id:
            return refuse("order_id_missing", 422, detail="order_id must be a non-empty string")
        return jobs.accept(tasks.send_receipt, order_id, idempotency_payload={"order_id": order_id})

    @app.post("/failing-receipts")
    def send_failing_receipt():
        retries = int(request.args.get("retries", "0"))
        interval = int(request.args.get("interval", "0"))
        retry = Retry(max=retries, interval=interval) if retries else None
        return jobs.accept(tasks.fail_with_secret, "1042", retry=retry)

    @app.post("/forgettable-receipts")
    def send_forgettable_receipt():
        return jobs.accept(tasks.send_receipt, "1042", result_ttl=0)

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str):
        return jobs.status_response(job_id)

    @app.get("/whoami")
    def whoami() -> dict[str, object]:
        return {"baggage_request_id": baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY)}

    return app

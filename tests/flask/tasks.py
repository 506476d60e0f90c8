"""Job functions the tests enqueue (importable by RQ workers as ``tests.flask.tasks``)."""

from __future__ import annotations


class MailboxFull(Exception):
    """A failure with a message the status endpoint must not leak."""


def send_receipt(order_id: str) -> str:
    return f"receipt for {order_id}"


def fail_with_secret(order_id: str) -> None:
    raise MailboxFull(f"mailbox of customer {order_id} is full")

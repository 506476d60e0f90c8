"""The demo's email provider: a stand-in for an SMTP relay whose login fails, shared through Redis.

The API flips "down for good" (the page's toggle); the worker asks before each send. A receipt's first
``email_failures`` sends are refused with the error a real relay gives for a bad login
(``smtplib.SMTPAuthenticationError``, 535), so the retry path is the one production code takes.
"""

from __future__ import annotations

import smtplib

import redis

DOWN_KEY = "jobtrail-demo:email-provider:down"
SENDS_KEY = "jobtrail-demo:email-provider:sends:{receipt}"
SENDS_TTL_SECONDS = 24 * 3600
LOGIN_REFUSED = (535, b"5.7.8 Username and Password not accepted")


def is_down(connection: redis.Redis) -> bool:
    return connection.get(DOWN_KEY) == b"1"


def set_down(connection: redis.Redis, down: bool) -> None:
    if down:
        connection.set(DOWN_KEY, b"1")
    else:
        connection.delete(DOWN_KEY)


def send(connection: redis.Redis, receipt: str, message: str, refuse_first: int) -> str:
    """Deliver ``message``; raise the relay's login error while it is down or for the first sends of a receipt."""
    key = SENDS_KEY.format(receipt=receipt)
    with connection.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, SENDS_TTL_SECONDS)
        tries = pipe.execute()[0]
    if is_down(connection) or tries <= refuse_first:
        raise smtplib.SMTPAuthenticationError(*LOGIN_REFUSED)
    return f"250 2.0.0 queued as {receipt}-{tries} ({len(message.encode())} bytes)"

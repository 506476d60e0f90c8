"""``jobtrail jobs``: operator commands on contract jobs (``requeue``), against the Redis RQ uses."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import redis
from jobtrail.jobs.requeue import RequeueRefused, requeue

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="jobtrail jobs", description="Operator commands on jobs of a job contract.")
    top.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL), help="default: $REDIS_URL")
    commands = top.add_subparsers(dest="command", required=True)
    again = commands.add_parser("requeue", help="run a failed or partially succeeded job again (attempts continue)")
    again.add_argument("job_id")
    again.add_argument("--failed-items-only", action="store_true", help="keep succeeded items; re-run the rest")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 requeued, 1 refused (the message says why), 2 bad usage or Redis unreachable."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "jobs":
        args = args[1:]
    options = parser().parse_args(args)
    connection = redis.Redis.from_url(options.redis_url)
    try:
        done = requeue(connection, options.job_id, failed_items_only=options.failed_items_only)
    except RequeueRefused as refused:
        print(f"jobtrail jobs requeue: {refused}", file=sys.stderr)
        return 1
    except redis.RedisError as error:
        print(f"jobtrail jobs requeue: Redis at {options.redis_url} refused ({type(error).__name__})", file=sys.stderr)
        return 2
    finally:
        connection.close()
    items = f", {done.items_requeued} item(s) to run" if done.items_requeued else ""
    print(f"job {done.job_id} requeued: run {done.run}, next attempt {done.next_attempt}{items}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

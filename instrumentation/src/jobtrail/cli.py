"""``jobtrail``: the one command for support and operators; each subcommand lives with its package.

Subcommands are imported only when used, so ``jobtrail trail`` needs the ``processor`` extra (the OTLP codec)
and nothing of RQ, and the instrumentation never imports the trail view. A reader that goes away
(``jobtrail trail ... | head``) ends the command quietly with exit code 141, as SIGPIPE would.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

SUBCOMMANDS = {
    "trail": ("jobtrail.trail.cli", "print the plain-language timeline of one user action"),
}
"""name -> (module with ``main(argv) -> int``, one-line help)."""
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a command whose reader closed the pipe."""


def usage() -> str:
    lines = ["usage: jobtrail <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "`jobtrail <command> --help` describes each command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    command = SUBCOMMANDS.get(args[0])
    if command is None:
        print(f"jobtrail: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _ = command
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = error.name or str(error)
        print(f"jobtrail {args[0]}: {missing} is missing; install jobtrail[processor]", file=sys.stderr)
        return 2
    try:
        result: int = module.main(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can be written; point stdout at devnull so the interpreter's final flush is quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return result


if __name__ == "__main__":
    sys.exit(main())

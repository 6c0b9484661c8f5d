"""Entry point of the ``graphengine`` command.

Each command lives in its own module with ``add_parser(subparsers)`` (which
sets ``func``) and is listed in ``COMMANDS``.  Errors of ours become one line on
stderr and exit code 1 (2 for usage errors); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence

from ..errors import GraphEngineError

#: Modules of graphengine.cli that each add one or more sub-commands.
COMMANDS = [
    "inspect_cmd",
    "run_cmd",
    "grad_cmd",
    "render_cmd",
    "train_cmd",
    "onnx_cmd",
    "optimize_cmd",
    "plot_cmd",
]


class CommandError(GraphEngineError):
    """A command-line argument that is well-formed but cannot be used."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="graphengine",
        description="Static computation graphs: define, save, differentiate, run, train, draw.",
    )
    parser.add_argument("--version", action="version", version=f"graphengine {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--max-tensor-bytes",
        type=int,
        metavar="N",
        help="refuse any computed tensor larger than N bytes, before it is "
        "allocated (default 2 GiB; see graphengine.limits)",
    )
    parser.add_argument("--allow-linked-data", action="store_true", help=_ALLOW_LINKED_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        importlib.import_module(f"{__package__}.{module}").add_parser(sub)
    # Accepted after the command too (graphengine train m.pb --allow-linked-data);
    # SUPPRESS keeps a subcommand from resetting the flag given before it.
    for command in sub.choices.values():
        command.add_argument(
            "--allow-linked-data",
            action="store_true",
            default=argparse.SUPPRESS,
            help=_ALLOW_LINKED_HELP,
        )
    return parser


_ALLOW_LINKED_HELP = (
    "accept external data files (model and ONNX) with several hard links or "
    "another owner than the model; by default they are refused, since a hard "
    "link can name any file on the disk (see graphengine.input_files)"
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # To start the command again: under mpiexec, or the resume command after Ctrl-C.
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        with contextlib.ExitStack() as stack:
            if args.max_tensor_bytes is not None:
                from ..limits import using_limits

                try:
                    stack.enter_context(using_limits(max_tensor_bytes=args.max_tensor_bytes))
                except ValueError as exc:
                    raise CommandError(f"--max-tensor-bytes: {exc}") from None
            if args.allow_linked_data:
                from ..input_files import allowing_linked_data

                stack.enter_context(allowing_linked_data())
            return int(args.func(args) or 0)
    except GraphEngineError as exc:
        if args.debug:
            raise
        print(f"graphengine {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (OSError, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"graphengine {args.command}: error: {message}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

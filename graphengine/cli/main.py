"""Entry point of the ``graphengine`` command.

Each command lives in its own module with ``add_parser(subparsers)`` (which
sets ``func``) and is listed in ``COMMANDS``.  Errors of ours become one line on
stderr and exit code 1 (2 for usage errors); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        importlib.import_module(f"{__package__}.{module}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # To start the command again: under mpiexec, or the resume command after Ctrl-C.
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        if args.max_tensor_bytes is None:
            return int(args.func(args) or 0)
        from ..limits import using_limits

        try:
            bounds = using_limits(max_tensor_bytes=args.max_tensor_bytes)
            bounds.__enter__()
        except ValueError as exc:
            raise CommandError(f"--max-tensor-bytes: {exc}") from None
        try:
            return int(args.func(args) or 0)
        finally:
            bounds.__exit__(None, None, None)
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

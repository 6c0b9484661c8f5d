"""Entry point of the ``graphengine`` command.

Each command lives in a module with ``add_parser(subparsers)`` (which adds the
command's parser and sets ``func``) and is listed in ``COMMANDS``.  Only the
modules of the commands named on the command line are imported: the others get
a placeholder parser with their line of help, so ``graphengine --help`` loads no
command's implementation (render, training, executor ...).  Errors of ours become
one line on stderr and exit code 1 (2 for usage errors); ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Collection, Sequence

from ..errors import GraphEngineError

#: Each command: the module of graphengine.cli that adds it, and its line in
#: ``graphengine --help`` (the same text as the module's own ``help=``, which
#: tests/test_imports.py checks), in the order of that listing.
COMMANDS = {
    "inspect": ("inspect_cmd", "summarize a model file"),
    "run": ("run_cmd", "run a model file on data from .npy/.npz files"),
    "grad": ("grad_cmd", "build the gradient graph of a model file by the chain rule"),
    "check": ("grad_cmd", "compare analytic gradients with finite differences (float64)"),
    "render": (
        "render_cmd",
        "draw the forward graph, the gradient graph or both with Graphviz",
    ),
    "train": ("train_cmd", "train a model file on .npz data and write the trained model"),
    "eval": ("train_cmd", "report the loss and metrics of a model file on .npz data"),
    "import": ("onnx_cmd", "convert an ONNX model into a graphengine model file"),
    "export": ("onnx_cmd", "convert a graphengine model file into an ONNX model"),
    "optimize": ("optimize_cmd", "simplify and fuse a graph (constant folding, CSE, fusion ...)"),
    "plot": ("plot_cmd", "draw loss and metric curves from a training log"),
}


class CommandError(GraphEngineError):
    """A command-line argument that is well-formed but cannot be used."""


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser.  The commands in ``commands`` (default: all) get
    their full parsers, which imports their modules; the others a placeholder
    that only lists them in ``--help``."""
    from .. import __version__

    if commands is None:
        commands = COMMANDS.keys()
    modules = {COMMANDS[c][0] for c in commands if c in COMMANDS}

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
    added: set[str] = set()
    for command, (module, help_line) in COMMANDS.items():
        if module not in modules:
            sub.add_parser(command, help=help_line)
        elif module not in added:  # adds every command of the module, in this order
            importlib.import_module(f"{__package__}.{module}").add_parser(sub)
            added.add(module)
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
    words = list(argv) if argv is not None else sys.argv[1:]
    # Every word that names a command gets its full parser: the command is the
    # first of them, and a spare one only costs an import.
    parser = build_parser(commands=[w for w in words if w in COMMANDS])
    args = parser.parse_args(words)
    # To start the command again: under mpiexec, or the resume command after Ctrl-C.
    args.argv = words
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
    except BrokenPipeError:
        # The reader went away (`graphengine inspect m.pb | head`): stop quietly,
        # as a Unix tool killed by SIGPIPE does.  Standard output goes to
        # /dev/null so that Python's flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # 128 + SIGPIPE, what a shell reports for such a tool
    except (OSError, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"graphengine {args.command}: error: {message}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

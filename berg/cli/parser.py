"""The ``berg`` parser, global options (``--version``, ``-v``, ``-q``, ``--debug``), logging and exit codes.

Exit codes: 0 done; 1 a :class:`~berg.errors.BergError` (the reason on stderr as ``berg: error: ...``, with the
traceback under ``--debug``) or a batch with failed units; 2 a usage error (argparse).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import sys
from collections.abc import Iterator, Sequence

from ..config import berg_version
from ..errors import BergError
from . import batch, catalog, download, encode, movie, train

COMMAND_MODULES = (catalog, download, encode, movie, train, batch)


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    """``-v``, ``-q`` and ``--debug``, accepted before and after the command name.

    The sub-commands' copies default to SUPPRESS so that they never overwrite a value given before the command.
    """
    parser = argparse.ArgumentParser(add_help=False)
    default = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="count", help="more log messages (-vv: debug)", **default)
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings off, no progress bars", **default)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error", **default)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``berg`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="berg", description="A zoo of DNN brain-encoding models.",
                                     parents=[_global_options(defaults=True)])
    parser.add_argument("--version", action="version", version=f"berg {berg_version()}")
    parser.set_defaults(verbose=0)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _global_options(defaults=False)
    for module in COMMAND_MODULES:
        module.register(subparsers, common)
    return parser


def log_level(verbose: int, quiet: bool) -> int:
    """The level of berg's log: ERROR with ``-q``, else WARNING, INFO with ``-v``, DEBUG with ``-vv``."""
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


@contextlib.contextmanager
def _logging_to_stderr(level: int) -> Iterator[None]:
    """berg's log records at ``level`` and above go to stderr while the command runs (then as before)."""
    logger = logging.getLogger("berg")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("berg: %(levelname)s: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``berg`` command; returns the exit code (0 done, 1 error, 2 usage)."""
    try:
        args = build_parser().parse_args(argv)
        args.command_line = shlex.join(["berg", *(sys.argv[1:] if argv is None else argv)])
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 0
    with _logging_to_stderr(log_level(args.verbose, args.quiet)):
        try:
            return args.run(args)
        except BergError as exc:
            if args.debug:
                raise
            print(f"berg: error: {exc}", file=sys.stderr)
            return 1

"""The ``berg`` command line: one module per command group, the parser and exit codes in :mod:`berg.cli.parser`.

Commands import torch only when they run a model: ``berg --help``, ``berg list`` and ``berg info`` do not.
"""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]

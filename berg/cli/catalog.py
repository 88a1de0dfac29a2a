"""``berg list`` and ``berg info MODEL``: the zoo's cards, without loading torch."""

from __future__ import annotations

import argparse

from .options import add_berg_dir


def _list(args: argparse.Namespace) -> int:
    from .. import api
    from ..registry import format_catalog

    print(format_catalog(api.get_model_catalog(berg_dir=args.berg_dir)))
    return 0


def _info(args: argparse.Namespace) -> int:
    import yaml

    from .. import api

    print(yaml.safe_dump(api.describe(args.model, berg_dir=args.berg_dir), sort_keys=False, width=110).rstrip())
    return 0


def register(subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``list`` and ``info``."""
    p = subparsers.add_parser("list", parents=[common], help="list the models in the zoo")
    add_berg_dir(p)
    p.set_defaults(run=_list)
    p = subparsers.add_parser("info", parents=[common], help="show a model card")
    p.add_argument("model", help="model id (see `berg list`)")
    add_berg_dir(p)
    p.set_defaults(run=_info)

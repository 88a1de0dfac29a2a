"""``berg download MODEL`` and ``berg import-img2fmri``: model files into the cache, verified."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_berg_dir, subject_arg


def _download(args: argparse.Namespace) -> int:
    from ..fetch import download

    paths = download(args.model, subjects=args.subjects, berg_dir=args.berg_dir, endpoint_url=args.endpoint_url,
                     show_progress=not args.quiet)
    for path in paths:
        print(path)
    return 0


def _import_img2fmri(args: argparse.Namespace) -> int:
    from ..config import default_berg_dir
    from ..errors import InvalidArgumentError
    from ..registry import get_card
    from ..storage.img2fmri import FORMAT, img2fmri_card, import_img2fmri

    berg_dir = args.berg_dir if args.berg_dir is not None else default_berg_dir()
    card = img2fmri_card(berg_dir) if args.model is None else get_card(args.model, berg_dir)
    if card.format != FORMAT:
        raise InvalidArgumentError(f"--model {card.model_id!r} is not valid: its format is {card.format!r}, "
                                   f"expected a card of format {FORMAT!r}")
    print(import_img2fmri(berg_dir, wheel=args.wheel, force=args.force, card=card))
    return 0


def register(subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``download`` and ``import-img2fmri``."""
    p = subparsers.add_parser("download", parents=[common], help="fetch a model's files into the cache, verified")
    p.add_argument("model", help="model id (see `berg list`)")
    p.add_argument("--subject", dest="subjects", type=subject_arg, action="append", default=None,
                   help="subject to fetch; repeat for several (default: all)")
    add_berg_dir(p, help="cache root (default: $BERG_HOME or the user cache)")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint of a mirror (default: $BERG_S3_ENDPOINT or AWS)")
    p.set_defaults(run=_download)

    p = subparsers.add_parser("import-img2fmri", parents=[common],
                              help="import the img2fmri 1.0 models (the zoo's card of format img2fmri-wheel)",
                              description="Write the model of the zoo's img2fmri-wheel card from the img2fmri 1.0 "
                                          "wheel (verified by sha256) into the berg folder.")
    p.add_argument("--wheel", type=Path, default=None, help="path of the img2fmri 1.0 wheel (default: cache or pip)")
    p.add_argument("--model", default=None, help="the card to write (default: the zoo's card of format img2fmri-wheel)")
    add_berg_dir(p)
    p.add_argument("--force", action="store_true", help="rebuild even if a complete import exists")
    p.set_defaults(run=_import_img2fmri)

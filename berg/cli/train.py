"""``berg train SPEC.yaml``: train, evaluate and package an encoder from a dataset spec."""

from __future__ import annotations

import argparse
import json
import sys

from .options import add_berg_dir


def _train(args: argparse.Namespace) -> int:
    from ..training.train import train

    result = train(args.config, args.berg_dir)
    overall = result.summary["rois"]["all"]
    print(json.dumps({"model_id": result.model_id, "model_dir": str(result.model_dir),
                      "card": str(result.card_path), "report": str(result.report_dir),
                      "median_correlation": overall["correlation"]["median"]}, indent=1))
    print(f"trained {result.model_id}; load it with berg.get_encoding_model({result.model_id!r}, subject=...)",
          file=sys.stderr)
    return 0


def register(subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``train``."""
    p = subparsers.add_parser("train", parents=[common],
                              help="train, evaluate and package an encoder from a dataset spec (YAML)")
    p.add_argument("config", help="dataset spec YAML (see berg.training.dataset)")
    add_berg_dir(p, help="where the model and its card are written")
    p.set_defaults(run=_train)

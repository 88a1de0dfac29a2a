"""The ``berg train`` sub-command."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    result = train(args.config, args.berg_dir)
    overall = result.summary["rois"]["all"]
    print(json.dumps({"model_id": result.model_id, "model_dir": str(result.model_dir),
                      "card": str(result.card_path), "report": str(result.report_dir),
                      "median_correlation": overall["correlation"]["median"]}, indent=1))
    print(f"trained {result.model_id}; load it with berg.get_encoding_model({result.model_id!r}, subject=...)",
          file=sys.stderr)
    return 0


def register_cli(subparsers) -> None:
    """Add ``train CONFIG.yaml [--berg-dir DIR]`` to a ``berg`` sub-parser set."""
    p = subparsers.add_parser("train", help="train, evaluate and package an encoder from a dataset spec (YAML)")
    p.add_argument("config", help="dataset spec YAML (see berg.training.dataset)")
    p.add_argument("--berg-dir", default=None, help="where the model and its card are written")
    p.set_defaults(func=_cmd_train)

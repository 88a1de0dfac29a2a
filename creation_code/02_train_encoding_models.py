"""Step 2: train, evaluate and package an encoder (native files, model card, accuracy report).

Usage: python creation_code/02_train_encoding_models.py DATASET.yaml [--berg-dir DIR]  (same as ``berg train``)
"""

import argparse
import sys

from berg.training.cli import register_cli

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
register_cli(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(["train", *sys.argv[1:]])
sys.exit(args.func(args))

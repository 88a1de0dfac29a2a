"""Step 2: train, evaluate and package an encoder (native files, model card, accuracy report).

Usage: python creation_code/02_train_encoding_models.py DATASET.yaml [--berg-dir DIR]  (same as ``berg train``)
"""

import sys

from berg.cli import main

sys.exit(main(["train", *sys.argv[1:]]))

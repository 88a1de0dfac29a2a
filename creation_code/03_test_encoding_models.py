"""Step 3: load a trained encoder through the public API, encode its test stimuli and score them per ROI.

Usage: python creation_code/03_test_encoding_models.py DATASET.yaml MODEL_ID [--berg-dir DIR] [--untrained-backbone]
"""

import argparse
import json

from berg.config import default_berg_dir
from berg.training.evaluate import evaluate

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("config")
parser.add_argument("model_id")
parser.add_argument("--berg-dir", default=None)
parser.add_argument("--untrained-backbone", action="store_true", help="the model was trained on an untrained backbone")
args = parser.parse_args()
summary = evaluate(args.config, args.berg_dir or default_berg_dir(), args.model_id,
                   backbone_weights=None if args.untrained_backbone else "default")
print(json.dumps(summary, indent=1))

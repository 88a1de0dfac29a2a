"""Step 1: validate a dataset spec and cache the backbone features of its stimuli.

Usage: python creation_code/01_prepare_data.py DATASET.yaml [--berg-dir DIR]
"""

import argparse
import json

from berg.config import default_berg_dir
from berg.training.evaluate import prepare

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("config")
parser.add_argument("--berg-dir", default=None)
args = parser.parse_args()
print(json.dumps(prepare(args.config, args.berg_dir or default_berg_dir()), indent=1))

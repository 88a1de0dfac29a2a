"""Import the published img2fmri 1.0 models as the fmri-bold5000-resnet18 model (same as ``berg import-img2fmri``).

The wheel ``img2fmri-1.0-py3-none-any.whl`` (PyPI, MIT licence) is taken from ``--wheel``, from the cache, or
fetched with ``python -m pip download img2fmri==1.0 --no-deps``; its sha256 is checked. The 15 Ridge models
(3 BOLD5000 subjects x 5 ROIs), the ROI masks and the subject -> MNI index maps are written in berg's native
format under ``<berg_dir>/encoding_models/modality-fmri/train_dataset-bold5000/model-resnet18/``.
No training happens here: the weights are img2fmri's, unchanged (see berg/storage/img2fmri.py).

Usage: python creation_code/import_img2fmri.py [--wheel PATH] [--berg-dir DIR] [--force]
"""

import sys

from berg.cli import main

sys.exit(main(["import-img2fmri", *sys.argv[1:]]))

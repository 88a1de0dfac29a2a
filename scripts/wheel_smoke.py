"""Smoke test of berg installed from its wheel (not editable): cards found, a synthetic model encodes.

    python scripts/wheel_smoke.py        # run from outside the repository, with the wheel installed

Exits non-zero when berg is imported from a source checkout instead of an installed wheel.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    os.environ["BERG_OFFLINE"] = "1"
    import berg
    from berg.storage.synthetic import write_synthetic_model

    location = Path(berg.__file__).resolve()
    if "site-packages" not in location.parts:
        print(f"berg is imported from {location}, not from an installed wheel", file=sys.stderr)
        return 1
    import yaml

    models = berg.list_models()
    in_repository = {yaml.safe_load(p.read_text())["model_id"]
                     for p in (Path(__file__).resolve().parents[1] / "model_cards").glob("*.yaml")}
    assert set(models) == in_repository, (models, in_repository)  # every card of model_cards/ is in the wheel
    card = berg.describe("fmri-bmd-s3d")
    assert len(card["rois"]) == 47 and card["n_voxels"][1] == 108219, card["model_id"]
    with tempfile.TemporaryDirectory() as berg_dir:
        write_synthetic_model(berg_dir, "fmri-bmd-s3d", subject=1)
        model = berg.BERG(berg_dir).get_encoding_model("fmri-bmd-s3d", subject=1, selection={"roi": "lFFA"},
                                                       device="cpu", backbone_weights=None)
        clip = np.random.default_rng(0).integers(0, 256, (1, 14, 3, 64, 80), dtype=np.uint8)
        responses = berg.encode(model, clip, show_progress=False)
        assert responses.shape == (1, 200) and np.isfinite(responses).all() and responses.std() > 0
    print(f"wheel smoke test passed: berg {berg.__version__} from {location.parent}; models: {', '.join(models)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fixtures for the batch tests: a tiny model, a folder of images and short films, and a job over them."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from _movie_support import ramp_video
from conftest import write_test_model
from PIL import Image

MODEL = "test-resnet18"
IMAGE_SIZES = [(40, 50), (40, 50), (36, 30), (40, 50), (40, 50)]  # one odd size: a ragged shard
FILMS = {"film_a": 20, "film_b": 25}  # name -> frames at 10 frames/s


def make_assets(folder: Path) -> dict:
    """Write the model (subjects 1, 2), ``photos/im*.png`` and ``films/*.mp4`` under ``folder``."""
    berg_dir = folder / "berg_dir"
    write_test_model(berg_dir, model_id=MODEL)
    rng = np.random.default_rng(3)
    (folder / "photos").mkdir(parents=True)
    for i, (h, w) in enumerate(IMAGE_SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "photos" / f"im{i}.png")
    (folder / "films").mkdir()
    for name, n in FILMS.items():
        ramp_video(folder / "films" / f"{name}.mp4", n, 10.0, size=(32, 48))
    return {"berg_dir": berg_dir, "photos": sorted((folder / "photos").glob("*.png")),
            "films": sorted((folder / "films").glob("*.mp4"))}


def job_dict(folder: Path, output: Path, **ray) -> dict:
    """Images (shards of 2) for subjects 1 and 2, and both films for subject 1, on the CPU, untrained backbone."""
    common = {"model": MODEL, "device": "cpu", "backbone_weights": "untrained"}
    job = {"output": str(output), "berg_dir": str(folder / "berg_dir"), "rows": [
        {"stimuli": str(folder / "photos"), "subjects": "all", "shard_size": 2, **common},
        {"stimuli": str(folder / "films" / "*.mp4"), "subjects": [1], "tr": 1.0, "hrf": "glover", **common}]}
    if ray:
        job["ray"] = ray
    return job


def read_outputs(root: Path) -> dict[str, np.ndarray]:
    """Every array output under ``root``: ``responses`` of image shards, ``bold`` and samples of films."""
    arrays = {}
    for path in sorted(root.rglob("*.h5")):
        with h5py.File(path, "r") as h5:
            for key in ("responses", "bold", "samples/responses"):
                if key in h5:
                    arrays[f"{path.relative_to(root)}:{key}"] = h5[key][()]
    return arrays

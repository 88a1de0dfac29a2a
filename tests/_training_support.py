"""Helpers for the training tests: a small-image ResNet-18 template card and synthetic datasets on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from berg.backbones import build_feature_extractor
from berg.cards import packaged_cards, validate_card
from berg.training import make_synthetic, write_dataset

IMAGE_SIZE = 32


def small_template(folder: Path) -> Path:
    """A ResNet-18 card that resizes to 32 x 32 (fast on a CPU); return its YAML path."""
    data = next(c for c in packaged_cards() if c.model_id == "fmri-bold5000-resnet18").to_dict()
    data.update(model_id="template-resnet18-small", subjects=[1], sources=[{"kind": "local"}])
    data.pop("group", None)
    data.pop("n_voxels", None)
    data["preprocessing"]["resize"] = [IMAGE_SIZE, IMAGE_SIZE]
    validate_card(data, "template")
    path = Path(folder) / "template.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def image_dataset(folder: Path, n_train: int = 40, n_test: int = 12, n_voxels: int = 30, **options):
    """Random images whose synthetic responses are a linear map of untrained ResNet-18 features.

    Returns (spec path, SyntheticData, images (n, 3, 32, 32) uint8).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    template = small_template(folder)
    images = np.random.default_rng(1).integers(0, 256, (n_train + n_test, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    extractor = build_feature_extractor(validate_card(yaml.safe_load(template.read_text()), "t"), None)
    with torch.inference_mode():
        feats = extractor.extract(torch.from_numpy(images))["avgpool"].flatten(1).numpy()
    data = make_synthetic(n_train=n_train, n_test=n_test, n_voxels=n_voxels, test_repeats=(2, 3), features=feats)
    spec = write_dataset(data, folder, stimuli=images, template=template.name, backbone_weights=None,
                         fit={"n_components": 10, "n_folds": 3}, **options)
    return spec, data, images


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder`` (none when it does not exist)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).exists() else []


def feature_dataset(folder: Path, n_train: int = 60, n_test: int = 20, n_voxels: int = 40, test_repeats=(2, 3),
                    n_latent: int = 8, **options):
    """A dataset of precomputed 512-d features (ResNet-18 avgpool size) spanning ``n_latent`` dimensions.

    Returns (spec path, SyntheticData).
    """
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((n_train + n_test, n_latent)) @ rng.standard_normal((n_latent, 512))
    data = make_synthetic(n_train=n_train, n_test=n_test, n_voxels=n_voxels, test_repeats=test_repeats,
                          features=feats, seed=2)
    options.setdefault("fit", {"n_components": n_latent, "n_folds": 3})
    return write_dataset(data, folder, **options), data

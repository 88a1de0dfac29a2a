"""Test support for model distribution: a loopback S3 server and small files in BERG's exact layout.

The files follow BERG's key names and dict structure (``pca_weights.npy``: scaler_param + pca_param;
``weights_sub-SS.npy``: coef_ + intercept_ + n_features_in_; ``metadata_sub-SS.npy``: fmri + encoding_models)
at tiny feature sizes, described by a card built from the fmri-bmd-s3d card.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from berg.cards import ModelCard, validate_card

REPO = Path(__file__).resolve().parents[1]
BUCKET = "brain-encoding-response-generator"
TINY_SHAPES = {"features.2": [2, 3, 4, 4], "features.5.cat": [3, 2, 3, 3], "features.7": [2, 2, 2, 2],
               "features.9.cat": [2, 1, 3, 3], "features.11.cat": [3, 1, 2, 2], "features.13": [2, 1, 2, 2],
               "avgpool": [5, 1, 1, 1]}
TINY_VOXELS = {1: 37, 2: 41}
TINY_VOLUME = (6, 7, 5)


def bmd_card_data() -> dict[str, Any]:
    """The packaged fmri-bmd-s3d card's content."""
    return yaml.safe_load((REPO / "berg" / "model_cards" / "fmri-bmd-s3d.yaml").read_text())


def tiny_card(n_components: int = 5) -> ModelCard:
    """The fmri-bmd-s3d card with tiny feature shapes, two subjects and a small volume."""
    data = copy.deepcopy(bmd_card_data())
    data["model_id"] = "fmri-bmd-tiny"
    data["backbone"]["feature_shapes"] = TINY_SHAPES
    data["readout"]["n_components"] = n_components
    data["subjects"] = sorted(TINY_VOXELS)
    data["n_voxels"] = dict(TINY_VOXELS)
    data["space"]["volume_shape"] = list(TINY_VOLUME)
    data["rois"] = ["lV1v", "rFFA", "BMDgeneral"]
    data["sources"][0]["prefix"] = "tests/tiny/"
    return validate_card(data, "<tiny test card>")


def save_pickled(path: Path, obj: Any) -> None:
    """Save a dict the way BERG does (``np.save`` of a pickled object)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, obj, allow_pickle=True)


def bmd_shared(card: ModelCard, rng: np.random.Generator) -> dict[str, Any]:
    """A ``pca_weights.npy`` dict: StandardScaler and TruncatedSVD attributes, float64."""
    width = sum(int(np.prod(s)) for s in card.data["backbone"]["feature_shapes"].values())
    k = card.data["readout"]["n_components"]
    var = rng.uniform(0.5, 2.0, width)
    return {
        "scaler_param": {"scale_": np.sqrt(var), "mean_": rng.normal(0, 1, width), "var_": var,
                         "n_features_in_": width, "n_samples_seen_": np.int64(1000)},
        "pca_param": {"components_": rng.normal(0, 1, (k, width)) / np.sqrt(width),
                      "explained_variance_": rng.uniform(0, 1, k), "explained_variance_ratio_": rng.uniform(0, 0.1, k),
                      "singular_values_": rng.uniform(1, 10, k), "n_features_in_": width},
    }


def bmd_subject(card: ModelCard, subject: int, rng: np.random.Generator,
                volume: tuple[int, int, int] = TINY_VOLUME) -> tuple[dict[str, Any], dict[str, Any]]:
    """``weights_sub-SS.npy`` and ``metadata_sub-SS.npy`` dicts for one subject (noise ceilings in percent)."""
    n, k = card.data["n_voxels"][subject], card.data["readout"]["n_components"]
    flat = np.zeros(int(np.prod(volume)), dtype=bool)
    flat[rng.choice(flat.size, n, replace=False)] = True
    sub_mask = flat.reshape(volume)
    group_mask = sub_mask & (rng.uniform(size=volume) < 0.8)
    weights = {"coef_": rng.normal(0, 1, (n, k)), "intercept_": rng.normal(0, 1, n), "n_features_in_": k}
    rois = {name: (np.sort(rng.choice(n, min(n, 5 + i), replace=False)),) for i, name in enumerate(card.data["rois"])}
    corr = np.clip(rng.uniform(-0.2, 0.8, n), 0, None)
    nc = rng.uniform(0, 90, n)
    nc[:3] = 0.0
    encoding = {f"noiseceiling_task_{s}": rng.uniform(0, 90, n) for s in ("train_n_1", "train_n_3", "test_n_1")}
    encoding.update(noiseceiling_task_test_n_10=nc, correlation=corr, r2=corr ** 2,
                    explained_variance=np.minimum(corr ** 2 / np.where(nc == 0, 1e-14, nc) * 100, 100))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-60.0, -70.0, -50.0]
    metadata = {"fmri": {"group_mask": group_mask, "group_mask_affine": affine, "sub_mask": sub_mask,
                         "sub_mask_affine": affine, "rois": rois},
                "encoding_models": encoding}
    return weights, metadata


def write_bmd_tree(model_dir: Path, card: ModelCard, subjects: list[int], seed: int = 0,
                   volume: tuple[int, int, int] = TINY_VOLUME) -> dict[str, Any]:
    """Write BERG's files for ``subjects`` under ``model_dir``; return the dicts keyed by relative path."""
    rng = np.random.default_rng(seed)
    files = {"encoding_models_weights/pca_weights.npy": bmd_shared(card, rng)}
    for s in subjects:
        weights, metadata = bmd_subject(card, s, rng, volume)
        files[f"encoding_models_weights/weights_sub-{s:02d}.npy"] = weights
        files[f"metadata/metadata_sub-{s:02d}.npy"] = metadata
    for rel, obj in files.items():
        save_pickled(model_dir / rel, obj)
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_client(endpoint: str) -> Any:
    """A signed client with dummy credentials, for filling the loopback server."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2", aws_access_key_id="test",
                        aws_secret_access_key="test")


def upload_tree(client: Any, local_dir: Path, prefix: str, multipart_threshold: int = 8 * 1024 * 1024) -> None:
    """Upload every file under ``local_dir`` to ``BUCKET`` under ``prefix``, public-read like BERG's bucket."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=5 * 1024 * 1024)
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, prefix + path.relative_to(local_dir).as_posix(), Config=config,
                           ExtraArgs={"ACL": "public-read"})

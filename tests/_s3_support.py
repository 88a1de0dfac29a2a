"""Test support for model distribution: a loopback S3 server and a tiny card in BERG's exact layout.

The files themselves are written by :mod:`tests._berg_producer`, the way BERG's creation code writes them.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

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

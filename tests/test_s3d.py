"""S3D at full size (untrained): the 7 return nodes, 4,084,096 features, and encode through the public API."""

import numpy as np
import pytest
import torch

import berg
from berg.backbones import build_feature_extractor
from berg.registry import get_card
from _support import write_test_model

pytestmark = pytest.mark.slow  # full-size S3D

CLIP = np.random.default_rng(2).integers(0, 256, size=(1, 20, 3, 120, 160), dtype=np.uint8)


@pytest.fixture(scope="module")
def s3d_model(tmp_path_factory):
    berg_dir = tmp_path_factory.mktemp("s3d")
    raw = write_test_model(berg_dir, model_id="test-s3d", n_voxels=12, n_components=2, subjects=(1,),
                           template="fmri-bmd-s3d")
    model = berg.get_encoding_model("test-s3d", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)
    return model, raw


def test_return_node_shapes_and_feature_count(s3d_model):
    model, raw = s3d_model
    card = get_card("fmri-bmd-s3d")
    clip = torch.from_numpy(CLIP[:, np.linspace(0, 19, 14).astype(int)])
    with torch.inference_mode():
        feats = model.extractor.extract(clip)
    want = card.data["backbone"]["feature_shapes"]
    assert list(feats) == card.data["backbone"]["return_nodes"]
    for node, value in feats.items():
        assert tuple(value.shape) == (1, *want[node]), node
    assert sum(v[0].numel() for v in feats.values()) == 4_084_096

    responses = berg.encode(model, CLIP)
    x = np.concatenate([feats[n].flatten(1).double().numpy() for n in feats], axis=1)
    want_resp = (((x - raw["mean"]) / raw["scale"]) @ raw["components"].T) @ raw[1]["coef"].T + raw[1]["intercept"]
    assert responses.shape == (1, 12)
    assert np.abs(responses - want_resp).max() / np.abs(want_resp).max() <= 1e-4


def test_too_few_frames(s3d_model):
    with pytest.raises(berg.BergError, match="at least 14 frames"):
        berg.encode(s3d_model[0], CLIP[:, :13])


def test_packaged_card_builds_full_s3d():
    extractor = build_feature_extractor(get_card("fmri-bmd-s3d"), None, device="cpu")
    assert extractor.nodes[-1] == "avgpool" and extractor.is_video

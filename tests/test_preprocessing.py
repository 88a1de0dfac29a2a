"""berg's preprocessing equals the producers' own at any input size, for every input form.

Clips: ``S3D_Weights.KINETICS400_V1.transforms()`` (what BERG applies) on the same uint8 TCHW frames.
Images: img2fmri's PIL path, ``transforms.Resize((224, 224))`` then ``ToTensor`` and ``Normalize``.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.models.video import S3D_Weights

from berg.backbones import build_feature_extractor
from berg.registry import get_card
from berg.stimuli import as_stimulus_set
from berg.video import sample_frame_indices, write_synthetic_video

SIZES = [(240, 320), (300, 300), (171, 128), (1080, 1920)]


@pytest.fixture(scope="module")
def prepared():
    """``prepare(model_id, stimulus)``: the stimulus validated and preprocessed as ``encode`` does it."""
    extractors = {m: build_feature_extractor(get_card(m), None, device="cpu")
                  for m in ("fmri-bmd-s3d", "fmri-bold5000-resnet18")}

    def prepare(model_id, stimulus):
        card = get_card(model_id)
        stimuli = as_stimulus_set(stimulus, card.stimulus_kind, card.data["stimulus"].get("n_frames"))
        return extractors[model_id].prepare(stimuli.load(0, stimuli.n))

    return prepare


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


@pytest.mark.parametrize("size", SIZES)
def test_clips_equal_the_s3d_preset(prepared, size):
    rng = np.random.default_rng(size[0])
    frames = rng.integers(0, 256, (2, 16, 3, *size), dtype=np.uint8)  # (B, T, C, H, W)
    preset = S3D_Weights.KINETICS400_V1.transforms()
    keep = sample_frame_indices(16, 14)
    want = torch.stack([preset(torch.from_numpy(clip[keep])) for clip in frames])  # (B, C, T, h, w)
    for stimulus in (frames, torch.from_numpy(frames), np.ascontiguousarray(frames.transpose(0, 1, 3, 4, 2))):
        assert _max_diff(prepared("fmri-bmd-s3d", stimulus), want) <= 1e-6


def test_video_files_equal_the_s3d_preset_on_their_decoded_frames(prepared, tmp_path):
    rng = np.random.default_rng(5)
    colours = rng.integers(0, 256, (20, 1, 1, 3), dtype=np.uint8)
    path = write_synthetic_video(tmp_path / "clip.mp4", 20, 10.0, (240, 320),
                                 lambda i: np.broadcast_to(colours[i], (240, 320, 3)).copy())
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    keep = sample_frame_indices(len(decoded), 14)
    want = S3D_Weights.KINETICS400_V1.transforms()(torch.from_numpy(decoded[keep]).permute(0, 3, 1, 2))
    assert _max_diff(prepared("fmri-bmd-s3d", [path]), want[None]) <= 1e-6


@pytest.mark.parametrize("size", SIZES)
def test_images_equal_img2fmris_pil_path(prepared, size, tmp_path):
    rng = np.random.default_rng(size[1])
    images = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
    img2fmri = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                   transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    want = torch.stack([img2fmri(Image.fromarray(img)) for img in images])
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
    forms = [images, torch.from_numpy(images).permute(0, 3, 1, 2), [Image.fromarray(img) for img in images], paths]
    for stimulus in forms:
        assert _max_diff(prepared("fmri-bold5000-resnet18", stimulus), want) <= 1e-6


def test_images_of_different_sizes_in_one_list(prepared):
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for size in SIZES[:3]]
    img2fmri = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                   transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    want = torch.stack([img2fmri(img) for img in images])
    assert _max_diff(prepared("fmri-bold5000-resnet18", images), want) <= 1e-6

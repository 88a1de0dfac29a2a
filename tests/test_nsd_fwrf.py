"""fmri-nsd-fwrf on BERG's checkpoints and metadata as BERG's creation code writes them: responses against a float64
re-statement of the GNet + fwRF forward formula, split ROIs, two subjects, preprocessing, refusal of checkpoints
that would run code, BERG's quickstart line, and NIfTI outputs in the subject's volume."""

from __future__ import annotations

import argparse
import os
import shutil
from collections import OrderedDict

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

import berg
from berg.errors import InvalidSelectionError, UnsafePickleError
from _berg_fwrf_producer import VOLUME, write_fwrf_tree
from _support import packaged_card_data

MODEL_ID = "fmri-nsd-fwrf"
CARD = packaged_card_data(MODEL_ID)
MODEL_DIR = ("encoding_models", "modality-fmri", "train_dataset-nsd", "model-fwrf")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A berg_dir with BERG's files of every ROI of subjects 1 and 2 (nothing is fetched: BERG_OFFLINE)."""
    berg_dir = tmp_path_factory.mktemp("fwrf") / "brain-encoding-response-generator"
    written = write_fwrf_tree(berg_dir.joinpath(*MODEL_DIR), CARD["rois"], CARD["backbone"]["options"]["split_rois"],
                              [1, 2])
    return berg_dir, written


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("BERG_OFFLINE", "1")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (3, 3, 240, 240), dtype=np.uint8)


def _g(x):
    return torch.log(1 + torch.abs(x)) * torch.tanh(x)


def reference(checkpoint: dict, subject: int, images: np.ndarray) -> np.ndarray:
    """The forward formula in float64 on the checkpoint's own tensors (module docstring of the adapter), with
    torch's functional operations only: (B, 3, H, W) uint8 -> (B, n_voxels)."""
    s = {k: v.double() for k, v in checkpoint["best_params"]["enc"].items()}
    x = TF.resize(torch.from_numpy(images), [227, 227], antialias=True).double() / 255 - s["mu"]

    def conv(z, name, **kw):
        return F.conv2d(z, s[f"{name}.weight"], s[f"{name}.bias"], **kw)

    def norm(z, name):
        return ((z - s[f"{name}.running_mean"][:, None, None]) / torch.sqrt(s[f"{name}.running_var"][:, None, None]
                + 1e-5)) * s[f"{name}.weight"][:, None, None] + s[f"{name}.bias"][:, None, None]

    def trunk(z, name):
        return torch.relu(conv(norm(z, f"enc.{name}.bn1"), f"enc.{name}.conv1", padding=1))

    a = F.max_pool2d(torch.relu(conv(x, "pre.conv1.0", stride=4, padding=2)), 3, 2)
    p = torch.relu(conv(a, "pre.conv2.0", padding=2))
    c3 = torch.relu(conv(norm(p, "enc.bn1"), "enc.conv3"))
    c4a = trunk(c3, "conv4a")
    c4b = trunk(c4a, "conv4b")
    c5a = trunk(F.max_pool2d(c4b, 3, 2, padding=1), "conv5a")
    c5b = trunk(c5a, "conv5b")
    c6a = trunk(c5b, "conv6a")
    c6b = trunk(c6a, "conv6b")
    maps = [torch.cat([a, p], 1), torch.cat([c3, c4a[:, :64], c4b[:, :64]], 1),
            torch.cat([c5a[:, :64], c5b[:, :64], c6a[:, :64], c6b], 1)]
    fw = {k: v.double() for k, v in checkpoint["best_params"]["fwrfs"][subject].items()}
    pooled = [torch.einsum("vs,bcs->bvc", torch.softmax(fw[f"rf{k}"].flatten(1), 1), _g(m.flatten(2)))
              for k, m in enumerate(maps)]
    return (torch.einsum("bvc,vc->bv", _g(torch.cat(pooled, 2)), fw["w"]) + fw["b"]).numpy()


def _expected(written, subject, roi, images):
    return np.concatenate([reference(c, subject, images) for c in written[subject, roi]["checkpoints"]], axis=1)


def _relative_error(ours, expected) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - expected).max() / np.abs(expected).max())


def _model(tree, subject, roi):
    berg_dir, _ = tree
    return berg.get_encoding_model(MODEL_ID, subject=subject, selection={"roi": roi}, device="cpu",
                                   berg_dir=berg_dir)


@pytest.mark.parametrize("subject, roi", [(1, "V1"), (1, "lateral"), (2, "FFA-1"), (2, "ventral")])
def test_responses_equal_the_float64_forward_formula(tree, images, subject, roi):
    _, written = tree
    out, meta = berg.encode(_model(tree, subject, roi), images, return_metadata=True, show_progress=False)
    expected = _expected(written, subject, roi, images)
    mask = written[subject, roi]["mask"]
    assert out.dtype == np.float32 and out.shape == (3, int(mask.sum())) == expected.shape
    assert _relative_error(out, expected) <= 1e-5
    np.testing.assert_array_equal(meta["voxel_ijk"], np.argwhere(mask))  # the ROI's voxels, C order
    assert meta["volume_shape"] == VOLUME
    one = berg.encode(_model(tree, subject, roi), images[:1], show_progress=False)
    assert one.shape == (1, mask.sum()) and _relative_error(one, expected[:1]) <= 1e-5


def test_several_rois_are_their_networks_side_by_side(tree, images):
    _, written = tree
    out = berg.encode(berg.get_encoding_model(MODEL_ID, subject=1, selection={"roi": ["OFA", "V1"]}, device="cpu",
                                              berg_dir=tree[0]), images, show_progress=False)
    expected = np.concatenate([_expected(written, 1, r, images) for r in ("OFA", "V1")], axis=1)
    assert _relative_error(out, expected) <= 1e-5


@pytest.mark.parametrize("size", [(227, 227), (300, 400), (120, 90)])
def test_preprocessing_is_bergs_resize_then_unit_range(tree, size):
    from berg.stimuli import as_stimulus_set

    model = _model(tree, 1, "V1")
    pixels = np.random.default_rng(sum(size)).integers(0, 256, (2, 3, *size), dtype=np.uint8)
    expected = TF.resize(torch.from_numpy(pixels), [227, 227], antialias=True).float() / 255
    prepared = model.extractor.prepare(as_stimulus_set(pixels, "image").load(0, 2))
    mu = torch.from_numpy(tree[1][1, "V1"]["checkpoints"][0]["stim_mean"])
    assert float(((prepared - mu) - (expected - mu)).abs().max()) <= 1e-6


def test_bergs_quickstart_line_runs_unchanged(tree, images):
    from berg import BERG

    berg_object = BERG(berg_dir=str(tree[0]))
    fmri_model = berg_object.get_encoding_model("fmri-nsd-fwrf",
                                                subject=1,
                                                selection={"roi": "V1"},
                                                device="cpu")
    insilico_fmri, insilico_fmri_metadata = berg_object.encode(fmri_model, images, return_metadata=True)
    assert insilico_fmri.shape == (3, tree[1][1, "V1"]["mask"].sum())
    assert insilico_fmri_metadata["backbone"]["weights"] == "checkpoints"


@pytest.mark.parametrize("selection, words", [
    (None, "an ROI is required"),
    ({"roi": "V4"}, "Did you mean: hV4"),
    ({"voxels": np.ones(5)}, "an ROI is required"),
])
def test_the_request_is_checked_before_any_file(tmp_path, selection, words):
    with pytest.raises(InvalidSelectionError, match=words):
        berg.get_encoding_model(MODEL_ID, subject=1, selection=selection, device="cpu", berg_dir=tmp_path)
    with pytest.raises(berg.errors.InvalidSubjectError, match="1, 2, 3, 4, 5, 6, 7, 8"):
        berg.get_encoding_model(MODEL_ID, subject=9, selection={"roi": "V1"}, device="cpu", berg_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_checkpoints_are_not_plain_state_dicts(tree):
    path = tree[0].joinpath(*MODEL_DIR, "encoding_models_weights", "weights_sub-01_roi-V1.pt")
    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    assert "argparse.Namespace" in names and any(n.endswith("multiarray._reconstruct") for n in names)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["namespace", "betas_info", "state_dict"])
def test_a_checkpoint_that_would_run_code_is_refused_with_nothing_run(tree, tmp_path, where):
    berg_dir = tmp_path / "berg"
    shutil.copytree(tree[0], berg_dir, ignore=shutil.ignore_patterns(".berg_manifest.json"))  # as downloaded
    path = berg_dir.joinpath(*MODEL_DIR, "encoding_models_weights", "weights_sub-01_roi-V1.pt")
    marker = tmp_path / "marker"
    checkpoint = dict(tree[1][1, "V1"]["checkpoints"][0])
    if where == "namespace":
        checkpoint["args."] = argparse.Namespace(roi="V1", lr=_Payload(marker))
    elif where == "betas_info":
        checkpoint["betas_info"] = {1: {"ncsnr": _Payload(marker)}}
    else:
        enc = OrderedDict(checkpoint["best_params"]["enc"])
        enc["mu"] = _Payload(marker)
        checkpoint["best_params"] = {**checkpoint["best_params"], "enc": enc}
    torch.save(checkpoint, path)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        berg.get_encoding_model(MODEL_ID, subject=1, selection={"roi": "V1"}, device="cpu", berg_dir=berg_dir)
    assert not marker.exists()


def test_nifti_outputs_in_the_subjects_volume(tree, images, tmp_path):
    _, written = tree
    out, meta = berg.encode(_model(tree, 2, "PPA"), images, return_metadata=True, show_progress=False)
    image = berg.to_nifti(out, meta)
    nib.save(image, tmp_path / "ppa.nii.gz")
    loaded = nib.load(tmp_path / "ppa.nii.gz")
    data = np.asarray(loaded.dataobj)
    mask = written[2, "PPA"]["mask"]
    assert data.shape == (*VOLUME, 3)
    np.testing.assert_allclose(loaded.affine, written[2, "PPA"]["metadata"]["fmri"]["fmri_affine"], atol=1e-5)
    np.testing.assert_allclose(data[mask].T, out, rtol=1e-6)
    assert np.isnan(data[~mask]).all()


def test_accuracy_is_each_roi_networks_own(tree):
    berg_dir, written = tree
    for roi in ("V1", "lateral"):  # as BERG asks for it: the ROI's metadata
        meta = berg.BERG(berg_dir).get_model_metadata(MODEL_ID, subject=1, roi=roi)
        stored = written[1, roi]["metadata"]["encoding_models"]
        np.testing.assert_array_equal(meta["voxel_ijk"], np.argwhere(written[1, roi]["mask"]))
        np.testing.assert_allclose(meta["accuracy"]["r2"], stored["r2"], rtol=1e-6)
        np.testing.assert_allclose(meta["accuracy"]["explained_variance"], stored["explained_variance"] / 100,
                                   rtol=1e-5)
        nc = stored["noise_ceiling"].copy()
        nc[nc <= 1e-12] = 0
        np.testing.assert_allclose(meta["accuracy"]["noise_ceiling"], nc, rtol=1e-6, atol=1e-12)
    model = _model(tree, 2, ["V2", "V1"])
    expected = np.concatenate([written[2, r]["metadata"]["encoding_models"]["r2"] for r in ("V2", "V1")])
    np.testing.assert_allclose(model.metadata["accuracy"]["r2"], expected, rtol=1e-6)

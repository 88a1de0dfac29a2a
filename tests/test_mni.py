"""Group-level MNI prediction: index maps, smoothing, overlap mask and the folded group readout vs img2fmri's steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.ndimage import gaussian_filter

from _support import ROIS, Wheel
from berg import group_readout, mni
from berg.errors import InvalidArgumentError, InvalidSelectionError, ModelFormatError
from berg.registry import get_card
from berg.storage.img2fmri import Img2fmriFormat, read_mni_map
from berg.storage.native import read_subject_metadata

MNI_SHAPE = (91, 109, 91)


def _subjects(model_dir):
    """The group readout's inputs, as the img2fmri format gives them."""
    return Img2fmriFormat().group_subjects(get_card("fmri-bold5000-resnet18"), model_dir)


def _mapped_mask(model_dir, subject, name):
    """Our MNI mask of one subject ROI/hemisphere, from the stored index map."""
    meta = read_subject_metadata(model_dir, subject)
    mni_voxel, source_voxel, shape = (read_mni_map(model_dir, subject)[k] for k in ("mni_voxel", "source_voxel",
                                                                                     "mni_shape"))
    volume = np.zeros(int(np.prod(shape)), bool)
    volume[mni_voxel[np.isin(source_voxel, meta.row_voxel[meta.roi_rows(name)])]] = True
    return volume.reshape(shape)


def test_index_maps_reproduce_all_30_shipped_mni_masks_and_their_smoothing(img2fmri_model_dir, img2fmri_wheel):
    wheel = Wheel(img2fmri_wheel)
    for subject in (1, 2, 3):
        for roi in ROIS:
            for hemi in ("LH", "RH"):
                ours = _mapped_mask(img2fmri_model_dir, subject, hemi + roi)
                shipped = wheel.nifti(f"derivatives/mni_bool_masks/sub{subject}_{hemi}{roi}_MNI.nii.gz").get_fdata()
                dice = 2 * np.sum(ours & (shipped > 0)) / (ours.sum() + (shipped > 0).sum())
                assert dice == 1.0, (subject, hemi + roi)
                smoothed = wheel.nifti(f"derivatives/s_bool_masks/s_sub{subject}_{hemi}{roi}_MNI.nii.gz").get_fdata()
                assert np.abs(mni.smooth_volume(ours, 1.0) - smoothed).max() <= 1e-4


def _shipped_overlap(wheel, rois):
    """img2fmri's overlap rule applied to its shipped smoothed masks."""
    overlap = np.zeros(MNI_SHAPE, bool)
    for roi in rois:
        for subject in (1, 2, 3):
            for hemi in ("LH", "RH"):
                s = wheel.nifti(f"derivatives/s_bool_masks/s_sub{subject}_{hemi}{roi}_MNI.nii.gz").get_fdata()
                overlap |= s > s.max() * 0.15
    return overlap


def _unfolded_group(wheel, model_dir, features, rois, sigma_mm):
    """The five steps done plainly: fill, map to MNI, smooth, mask, z-score / sum / z-score (scipy)."""
    overlap = _shipped_overlap(wheel, rois)
    total = 0.0
    for subject in (1, 2, 3):
        volume = wheel.subject_volume(subject, features, rois)
        meta = read_subject_metadata(model_dir, subject)
        mni_voxel, source_voxel, shape = (read_mni_map(model_dir, subject)[k] for k in ("mni_voxel", "source_voxel",
                                                                                     "mni_shape"))
        values = volume[tuple(meta.voxel_ijk[source_voxel].T)]  # (m, n_stimuli), NaN outside the chosen ROIs
        mni_volume = np.full((int(np.prod(shape)), len(features)), np.nan)
        mni_volume[mni_voxel] = values
        mni_volume = mni_volume.reshape(*shape, -1)
        smoothed = np.stack([gaussian_filter(np.nan_to_num(mni_volume[..., i]), sigma_mm / 2, mode="constant",
                                             truncate=4) for i in range(len(features))], -1)
        total = total + stats.zscore(smoothed[overlap], axis=0)
    return stats.zscore(total, axis=0), overlap


@pytest.mark.parametrize("rois, sigma_mm", [(None, 1.0), (["PPA", "OPA"], 2.5)])
def test_folded_group_output_equals_the_unfolded_five_steps(img2fmri_model_dir, img2fmri_wheel, rois, sigma_mm):
    features = np.random.default_rng(3).gamma(1.0, 0.5, size=(4, 512)).astype(np.float32)
    group = group_readout.group_readout(_subjects(img2fmri_model_dir), rois=rois or ROIS, sigma_mm=sigma_mm)
    y = torch.from_numpy(features) @ torch.from_numpy(group.weight).T + torch.from_numpy(group.bias)
    ours = group_readout.group_zscore(y, group.segments).numpy()
    expected, overlap = _unfolded_group(Wheel(img2fmri_wheel), img2fmri_model_dir, features,
                                        rois or ROIS, sigma_mm)
    np.testing.assert_array_equal(group.voxel_ijk, np.argwhere(overlap))
    assert ours.shape == (4, overlap.sum())
    assert np.abs(ours - expected.T).max() <= 1e-4
    assert group.volume_shape == MNI_SHAPE
    np.testing.assert_array_equal(group.affine, [[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


def test_overlap_has_9641_voxels_and_roi_members(img2fmri_model_dir, img2fmri_wheel):
    group = group_readout.group_readout(_subjects(img2fmri_model_dir), ROIS)
    assert group.voxel_ijk.shape == (9641, 3)
    np.testing.assert_array_equal(group.segments, [0, 9641, 2 * 9641, 3 * 9641])
    assert group.weight.shape == (3 * 9641, 512) and group.weight.dtype == np.float32
    wheel = Wheel(img2fmri_wheel)
    for roi in ("EarlyVis", "RSC"):
        members = np.zeros(len(group.voxel_ijk), bool)
        members[group.roi_voxels[roi]] = True
        np.testing.assert_array_equal(members, _shipped_overlap(wheel, [roi])[tuple(group.voxel_ijk.T)])
    both = np.union1d(group.roi_voxels["LHPPA"], group.roi_voxels["RHPPA"])
    np.testing.assert_array_equal(both, group.roi_voxels["PPA"])


def test_smoothing_operator_equals_full_volume_smoothing():
    rng = np.random.default_rng(0)
    shape = (12, 10, 9)
    src = rng.choice(np.prod(shape), 40, replace=False)
    src[0] = 0  # a corner: the constant border must hold
    dst = np.sort(rng.choice(np.prod(shape), 300, replace=False))
    values = rng.normal(size=40)
    volume = np.zeros(np.prod(shape))
    volume[src] = values
    for sigma_mm in (0.0, 1.0, 3.0):
        op = mni.smoothing_operator(src, dst, shape, sigma_mm)
        full = mni.smooth_volume(volume.reshape(shape), sigma_mm).reshape(-1)
        np.testing.assert_allclose(op @ values, full[dst], atol=1e-12)


def test_nanmean_fold_equals_sequential_nanmean():
    rng = np.random.default_rng(1)
    n_voxels, steps, start = 15, [], 0
    for size in (6, 8, 5, 9):
        voxels = rng.choice(n_voxels, size, replace=False)
        steps.append((np.arange(start, start + size), voxels))
        start += size
    rows = rng.normal(size=start)
    volume = np.full(n_voxels, np.nan)
    for r, v in steps:
        volume[v] = np.nanmean(np.stack([volume[v], rows[r]]), axis=0)
    folded = mni.nanmean_fold(steps, n_voxels, start) @ rows
    touched = ~np.isnan(volume)
    np.testing.assert_allclose(folded[touched], volume[touched], atol=1e-12)
    assert np.all(folded[~touched] == 0)


def test_group_zscore_matches_scipy_and_checks_segments():
    y = torch.randn(5, 3 * 7, dtype=torch.float64)
    blocks = [stats.zscore(y[:, i * 7:(i + 1) * 7].numpy(), axis=1) for i in range(3)]
    expected = stats.zscore(sum(blocks), axis=1)
    np.testing.assert_allclose(group_readout.group_zscore(y, [0, 7, 14, 21]).numpy(), expected, atol=1e-12)
    with pytest.raises(ModelFormatError, match="segments"):
        group_readout.group_zscore(y, [0, 7, 21])


def test_bad_rois_and_sigma_are_rejected(img2fmri_model_dir):
    with pytest.raises(InvalidSelectionError, match="PPA"):
        group_readout.check_rois(["PAA"], ROIS)
    with pytest.raises(InvalidSelectionError, match="one or more"):
        group_readout.check_rois([], ROIS)
    for bad in (-1.0, float("nan"), "wide", True):
        with pytest.raises(InvalidArgumentError, match="sigma_mm"):
            group_readout.check_sigma(bad)
    assert group_readout.check_rois(["PPA", "EarlyVis"], ROIS) == ("EarlyVis", "PPA")
    assert group_readout.check_rois("LOC", ("LOC", "OPA")) == ("LOC",)  # the card's ROIs decide, not a fixed list


def test_the_importer_and_the_warp_load_without_torch():
    import subprocess
    import sys

    code = ("import sys, berg.mni, berg.storage.img2fmri, berg.card_registries; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

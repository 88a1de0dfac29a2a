"""img2fmri model: berg's group-level MNI prediction vs img2fmri's subject-space stage, per frame, from 512-d features.

berg: the folded group readout (one (3 x 9641) x 512 matmul) and the per-stimulus group z-scoring, in torch on
the CPU, for a batch of frames. img2fmri, done its way (``generate_predictions``): for every frame and subject,
load each ROI's Ridge pickle and both hemisphere masks from disk (joblib, nibabel), predict one row, and fill the
subject volume with the pairwise nanmean. berg's side does strictly more work (MNI warp, smoothing, group
z-scoring included). Run ``python scripts/bench_img2fmri.py [--quick] [--berg-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

ROIS = ("EarlyVis", "OPA", "LOC", "RSC", "PPA")


def _img2fmri_frame(root: Path, features: np.ndarray) -> list[np.ndarray]:
    """One frame through img2fmri's subject-space stage, reading every file from disk as it does."""
    import joblib
    import nibabel as nib

    volumes = []
    for subject in (1, 2, 3):
        volume = None
        for roi in ROIS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = joblib.load(root / "models" / f"subj{subject}_{roi}_model.pkl")
            prediction = model.predict([features])[0]
            masks = [nib.load(root / "derivatives" / "bool_masks" /
                              f"derivatives_spm_sub-CSI{subject}_sub-CSI{subject}_mask-{h}{roi}.nii.gz")
                     for h in ("LH", "RH")]
            lh, rh = (m.get_fdata() > 0 for m in masks)
            if volume is None:
                volume = np.full(lh.shape, np.nan)
            n_lh = int(lh.sum())
            volume[lh] = np.nanmean(np.array([volume[lh], prediction[:n_lh]]), axis=0)
            volume[rh] = np.nanmean(np.array([volume[rh], prediction[n_lh:]]), axis=0)
        volumes.append(volume)
    return volumes


def run(quick: bool = False, berg_dir: str | None = None) -> dict:
    """Time both sides in this process; return per-frame times (ms) and the ratio."""
    from berg.mni import group_readout, group_zscore
    from berg.storage.img2fmri import import_img2fmri, locate_wheel

    n_theirs, n_ours, batch = (3, 2048, 256) if quick else (20, 16384, 512)
    rng = np.random.default_rng(0)
    features = rng.gamma(1.0, 0.5, size=(max(n_theirs, n_ours), 512)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = locate_wheel()
        model_dir = import_img2fmri(berg_dir or Path(tmp) / "berg", wheel=wheel)
        start = time.perf_counter()
        group = group_readout(model_dir)
        setup_s = time.perf_counter() - start
        weight, bias = torch.from_numpy(group.weight), torch.from_numpy(group.bias)
        x = torch.from_numpy(features[:n_ours])
        group_zscore(torch.addmm(bias, x[:batch], weight.T), group.segments)  # warm-up
        start = time.perf_counter()
        for i in range(0, n_ours, batch):
            out = group_zscore(torch.addmm(bias, x[i:i + batch], weight.T), group.segments)
        ours_ms = (time.perf_counter() - start) / n_ours * 1e3
        assert out.shape == (batch, len(group.voxel_ijk))

        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tmp, [n for n in archive.namelist()
                                     if n.startswith(("img2fmri/models/", "img2fmri/derivatives/bool_masks/"))])
        root = Path(tmp) / "img2fmri"
        _img2fmri_frame(root, features[0])  # warm-up (imports, page cache)
        start = time.perf_counter()
        for i in range(n_theirs):
            _img2fmri_frame(root, features[i])
        theirs_ms = (time.perf_counter() - start) / n_theirs * 1e3
    return {
        "berg_group_mni_ms_per_frame": ours_ms,
        "img2fmri_subject_space_ms_per_frame": theirs_ms,
        "speedup": theirs_ms / ours_ms,
        "berg_group_readout_setup_s": setup_s,
        "frames": {"berg": n_ours, "berg_batch": batch, "img2fmri": n_theirs},
        "overlap_voxels": int(len(group.voxel_ijk)),
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames")
    parser.add_argument("--berg-dir", default=None, help="use (or import into) this berg folder")
    cli = parser.parse_args()
    result = run(cli.quick, cli.berg_dir)
    print(f"berg group-level MNI:       {result['berg_group_mni_ms_per_frame']:.4f} ms/frame")
    print(f"img2fmri subject space:     {result['img2fmri_subject_space_ms_per_frame']:.1f} ms/frame")
    print(f"ratio:                      {result['speedup']:.0f}x")
    print(json.dumps(result, indent=1))

"""img2fmri model: berg's group-level MNI prediction vs img2fmri's subject-space stage, per frame, from 512-d features.

berg: the folded group readout (one (3 x 9641) x 512 matmul) and the per-stimulus group z-scoring, in torch, for
a batch of frames. Its floor: one bare ``torch.mm`` of the same shape and dtype, no bias, no z-scoring.
img2fmri, done its way (``generate_predictions``): for every frame and subject, load each ROI's Ridge pickle and
both hemisphere masks from disk (joblib, nibabel), predict one row, and fill the subject volume with the pairwise
nanmean. berg's side does strictly more work (MNI warp, smoothing, group
z-scoring included). The three are interleaved, best of three.
Run ``python scripts/bench_img2fmri.py [--quick] [--berg-dir DIR] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from benchutil import best_of, device_name

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


def run(quick: bool = False, berg_dir: str | None = None, device: str = "cpu") -> dict:
    """Time berg, its matmul floor and img2fmri interleaved (best of three); return per-frame times (ms), ratios."""
    from berg.group_readout import group_readout, group_zscore
    from berg.readout import Readout
    from berg.storage.img2fmri import Img2fmriFormat, img2fmri_card, import_img2fmri, locate_wheel

    n_theirs, n_ours, batch = (3, 2048, 256) if quick else (20, 16384, 512)
    rng = np.random.default_rng(0)
    features = rng.gamma(1.0, 0.5, size=(max(n_theirs, n_ours), 512)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = locate_wheel()
        model_dir = import_img2fmri(berg_dir or Path(tmp) / "berg", wheel=wheel)
        start = time.perf_counter()
        group = group_readout(Img2fmriFormat().group_subjects(img2fmri_card(), model_dir), ROIS)
        setup_s = time.perf_counter() - start
        # the group readout exactly as the encoder builds it: the folded map, then the group z-scoring
        readout = Readout(torch.from_numpy(group.weight), torch.from_numpy(group.bias), {"avgpool": 512},
                          post=functools.partial(group_zscore, segments=group.segments)).to(device)
        x = torch.from_numpy(features[:n_ours]).to(device)
        weight_t = readout.blocks["avgpool"].T  # the floor: one bare matmul of the folded map's shape and dtype

        @torch.inference_mode()
        def ours():
            for i in range(0, n_ours, batch):
                out = readout({"avgpool": x[i:i + batch]})
            assert out.shape == (batch, len(group.voxel_ijk))

        @torch.inference_mode()
        def floor():
            for i in range(0, n_ours, batch):
                torch.mm(x[i:i + batch], weight_t)

        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tmp, [n for n in archive.namelist()
                                     if n.startswith(("img2fmri/models/", "img2fmri/derivatives/bool_masks/"))])
        root = Path(tmp) / "img2fmri"
        t = best_of({"berg": ours, "floor": floor,
                     "img2fmri": lambda: [_img2fmri_frame(root, features[i]) for i in range(n_theirs)]})
    ours_ms, floor_ms, theirs_ms = (t["berg"] / n_ours * 1e3, t["floor"] / n_ours * 1e3,
                                    t["img2fmri"] / n_theirs * 1e3)
    return {
        "berg_group_mni_ms_per_frame": ours_ms,
        "matmul_floor_ms_per_frame": floor_ms,
        "img2fmri_subject_space_ms_per_frame": theirs_ms,
        "speedup": theirs_ms / ours_ms,
        "berg_vs_floor": ours_ms / floor_ms,
        "berg_group_readout_setup_s": setup_s,
        "frames": {"berg": n_ours, "berg_batch": batch, "img2fmri": n_theirs},
        "overlap_voxels": int(len(group.voxel_ijk)),
        "map_shape": list(weight_t.T.shape),
        "device": device_name(device),
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames")
    parser.add_argument("--berg-dir", default=None, help="use (or import into) this berg folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    cli = parser.parse_args()
    result = run(cli.quick, cli.berg_dir, cli.device)
    print(f"berg group-level MNI:       {result['berg_group_mni_ms_per_frame']:.4f} ms/frame")
    print(f"bare matmul floor:          {result['matmul_floor_ms_per_frame']:.4f} ms/frame")
    print(f"img2fmri subject space:     {result['img2fmri_subject_space_ms_per_frame']:.1f} ms/frame")
    print(f"ratio:                      {result['speedup']:.0f}x")
    print(json.dumps(result, indent=1))

"""A BERG fwRF model tree made the way BERG's creation code makes one, with our own code.

The procedure of BERG's ``02_train_encoding_models/train_dataset-nsd/model-fwrf/02_train_encoding.py`` and
``03_test_encoding_models/train_dataset-nsd/01_test_encoding.py``, on synthetic data and a small volume:

1. per subject and ROI: the ROI's voxels (``roi_mask_volume[roi_mask_volume]``, C order); a split ROI's betas cut at
   ``ceil(n / 2)`` into split 1 and split 2;
2. per network: a GNet encoder (BERG's module names: ``mu``, ``pre.conv1.0``, ``enc.conv4a.conv1`` ...) with
   ``mu`` the mean training image per channel, and a layer-wise fwRF (``rf0``..``rf2``, ``w``, ``b``) over its three
   maps, seeded, then a few Adam steps on synthetic images and betas (batch norm running statistics move too);
3. ``torch.save`` of BERG's dict: ``args.`` (an ``argparse.Namespace`` of BERG's options), ``best_params`` and
   ``final_params`` {``enc``, ``fwrfs`` {subject: ...}}, the histories, ``best_epoch``, ``best_joint_cc_score``,
   ``subject_val_cc``, ``stim_mean`` (1, 3, 1, 1) and ``betas_info`` {subject: the betas dict without ``betas``};
4. metadata per ROI as BERG's test script saves it: ``fmri`` {``ncsnr``, ``roi_mask_volume``, ``fmri_affine``},
   ``encoding_models`` {``r2``, ``noise_ceiling``, ``explained_variance``, image numbers}, with ``np.save``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _berg_producer import save_pickled

VOLUME = (14, 16, 12)
AFFINE = np.array([[-1.8, 0, 0, 12.6], [0, 1.8, 0, -14.4], [0, 0, 1.8, -10.8], [0, 0, 0, 1.0]])


class _Block(nn.Module):  # BERG's TrunkBlock: bn1 -> drop1 -> conv1 -> relu
    def __init__(self, n_in, n_out):
        super().__init__()
        self.conv1, self.drop1 = nn.Conv2d(n_in, n_out, 3, 1, 1), nn.Dropout2d(0.5)
        self.bn1 = nn.BatchNorm2d(n_in, momentum=0.25)

    def forward(self, x):
        return torch.relu(self.conv1(self.drop1(self.bn1(x))))


class _Pre(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2))
        self.conv2 = nn.Sequential(nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True))


class _Enc(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv3, self.drop1, self.bn1 = nn.Conv2d(192, 128, 3), nn.Dropout2d(0.5), nn.BatchNorm2d(192, momentum=0.25)
        self.pool1 = nn.MaxPool2d(3, 2, 1)
        for name, (a, b) in {"conv4a": (128, 128), "conv5a": (128, 128), "conv6a": (128, 128), "conv4b": (128, 128),
                             "conv5b": (128, 128), "conv6b": (128, 64)}.items():
            setattr(self, name, _Block(a, b))


class GNetForTraining(nn.Module):
    """BERG's GNet with trunk width 64, written out for training the fixture."""

    def __init__(self, mu: np.ndarray):
        super().__init__()
        self.mu = nn.Parameter(torch.from_numpy(mu), requires_grad=False)
        self.pre, self.enc = _Pre(), _Enc()

    def forward(self, x):
        c1 = self.pre.conv1(x - self.mu)
        y = self.pre.conv2(c1)
        e = self.enc
        c3 = torch.relu(e.conv3(e.drop1(e.bn1(y))))
        c4a = e.conv4a(c3)
        c4b = e.conv4b(c4a)
        c5a = e.conv5a(e.pool1(c4b))
        c5b = e.conv5b(c5a)
        c6a = e.conv6a(c5b)
        c6b = e.conv6b(c6a)
        return [torch.cat([c1, y], 1), torch.cat([c3, c4a[:, :64], c4b[:, :64]], 1),
                torch.cat([c5a[:, :64], c5b[:, :64], c6a[:, :64], c6b], 1)]


class FwrfForTraining(nn.Module):
    """BERG's Torch_LayerwiseFWRF: ones for the pooling fields, N(0, 0.01) for the weights and the bias."""

    def __init__(self, n_voxels: int, rng: np.random.Generator):
        super().__init__()
        for k, size in enumerate((27, 25, 13)):
            self.register_parameter(f"rf{k}", nn.Parameter(torch.ones(n_voxels, size, size)))
        self.w = nn.Parameter(torch.from_numpy(rng.normal(0, 0.01, (n_voxels, 768)).astype(np.float32)))
        self.b = nn.Parameter(torch.from_numpy(rng.normal(0, 0.01, n_voxels).astype(np.float32)))

    def forward(self, maps):
        act = lambda x: torch.log(1 + torch.abs(x)) * torch.tanh(x)  # noqa: E731  BERG's _log_act_fn
        phi = [torch.tensordot(torch.softmax(getattr(self, f"rf{k}").flatten(1), 1), act(m.flatten(2)),
                               dims=[[1], [2]]) for k, m in enumerate(maps)]
        out = torch.bmm(act(torch.cat(phi, 2)), self.w.unsqueeze(2))[..., 0]  # (n_v, B)
        return out.t() + self.b


def roi_masks(rois: list[str], seed: int, sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """A boolean mask per ROI on :data:`VOLUME` (the split ROIs larger, or ``sizes`` voxels), overlapping as NSD's
    do."""
    rng = np.random.default_rng(seed)
    masks = {}
    for i, roi in enumerate(rois):
        mask = np.zeros(VOLUME, dtype=bool)
        size = (sizes or {}).get(roi) or (40 + 3 * i if roi in ("lateral", "ventral") else 4 + i % 7)
        mask.flat[rng.choice(mask.size, size, replace=False)] = True
        masks[roi] = mask
    return masks


def _train(encoder, fwrf, rng, n_voxels, steps: int = 2):
    images = torch.from_numpy(rng.random((3, 3, 227, 227), dtype=np.float32))
    betas = torch.from_numpy(rng.normal(0, 1, (3, n_voxels)).astype(np.float32))
    params = [p for p in (*encoder.parameters(), *fwrf.parameters()) if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=1e-3)
    encoder.train(), fwrf.train()
    for _ in range(steps):
        optimiser.zero_grad()
        loss = ((fwrf(encoder(images)) - betas) ** 2).mean()
        loss.backward()
        optimiser.step()
    encoder.eval(), fwrf.eval()


def write_fwrf_tree(model_dir: Path, rois: list[str], split_rois: list[str], subjects: list[int],
                    sizes: dict[str, int] | None = None) -> dict:
    """Write BERG's checkpoints and metadata for every ROI of ``subjects`` (``sizes``: voxels of some ROIs); return
    ``{(subject, roi): {"mask", "checkpoints": [dicts], "metadata": dict}}``."""
    written = {}
    for subject in subjects:
        masks = roi_masks(rois, 100 + subject, sizes)
        for r, roi in enumerate(rois):
            torch.manual_seed(1000 * subject + r)
            rng = np.random.default_rng(1000 * subject + r)
            mask = masks[roi]
            n = int(mask.sum())
            ncsnr = rng.uniform(0, 1.2, n).astype(np.float32)
            images = rng.random((6, 3, 227, 227), dtype=np.float32)
            stim_mean = np.mean(images, axis=(0, 2, 3), keepdims=True).astype(np.float32)
            betas_info = {subject: {"roi_mask_volume": mask, "fmri_affine": AFFINE, "ncsnr": ncsnr,
                                    "masterordering": np.arange(30), "test_img_idx": np.arange(5),
                                    "train_img_num": np.arange(20), "val_img_num": np.arange(20, 25),
                                    "test_img_num": np.arange(25, 30)}}
            cut = math.ceil(n / 2)
            parts = [slice(0, cut), slice(cut, n)] if roi in split_rois else [slice(0, n)]
            checkpoints = []
            for i, part in enumerate(parts):
                size = part.stop - part.start
                encoder, fwrf = GNetForTraining(stim_mean), FwrfForTraining(size, rng)
                _train(encoder, fwrf, rng, size)
                best = {"enc": encoder.state_dict(), "fwrfs": {subject: fwrf.state_dict()}}
                checkpoint = {
                    "args.": argparse.Namespace(subjects="single", used_nsd_sub=subject, roi=roi,
                                                split_roi=int(len(parts) > 1), split=i + 1, trunk_width=64,
                                                epochs_phase_1=75, epochs_phase_2=10, epochs_phase_3=10, lr=1e-3,
                                                berg_dir="../brain-encoding-response-generator"),
                    "best_params": best, "final_params": best, "trn_hist": [0.9, 0.8], "hold_hist": [0.95, 0.9],
                    "hold_cc_hist": [0.1, 0.2], "best_epoch": 1, "best_joint_cc_score": np.float64(0.2),
                    "subject_val_cc": {subject: rng.uniform(0, 0.5, size)}, "stim_mean": stim_mean,
                    "betas_info": betas_info}
                split = f"_split-{i + 1}" if len(parts) > 1 else ""
                path = model_dir / "encoding_models_weights" / f"weights_sub-{subject:02d}_roi-{roi}{split}.pt"
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(checkpoint, path)
                checkpoints.append(checkpoint)
            r2 = rng.uniform(0, 0.3, n)
            noise_ceiling = ncsnr.astype(np.float64) ** 2 / (ncsnr.astype(np.float64) ** 2 + 1 / 3)
            noise_ceiling[noise_ceiling == 0] = 1e-14
            metadata = {"fmri": {"ncsnr": ncsnr, "roi_mask_volume": mask, "fmri_affine": AFFINE},
                        "encoding_models": {"r2": r2, "noise_ceiling": noise_ceiling,
                                            "explained_variance": np.minimum(r2 / noise_ceiling * 100, 100),
                                            "train_img_num": np.arange(20), "val_img_num": np.arange(20, 25),
                                            "test_img_num": np.arange(25, 30)}}
            save_pickled(model_dir / "metadata" / f"metadata_sub-{subject:02d}_roi-{roi}.npy", metadata)
            written[subject, roi] = {"mask": mask, "checkpoints": checkpoints, "metadata": metadata}
    return written

"""The feature-weighted receptive field model (St-Yves & Naselaris) as BERG trains it on NSD: a GNet encoder and a
layer-wise fwRF readout per checkpoint, one checkpoint per subject x ROI (two for the split ROIs).

GNet (``enc`` state dict), on a (B, 3, 227, 227) image ``x`` in [0, 1] minus the checkpoint's ``stim_mean`` ``mu``:

- prefilter: ``a = maxpool3/2(relu(conv11x11/4, pad 2 (3 -> 64)))`` (27 x 27), ``p = relu(conv5x5, pad 2 (64 -> 192))``;
- stage: ``c3 = relu(conv3x3 (192 -> 128)(dropout(bn(p))))`` (25 x 25); trunk blocks ``t(z) = relu(conv3x3, pad 1
  (dropout(bn(z))))``: ``c4a = t(c3)``, ``c4b = t(c4a)`` (128 ch), ``c5a = t(maxpool3/2, pad 1 (c4b))`` (13 x 13),
  ``c5b = t(c5a)``, ``c6a = t(c5b)`` (128 ch), ``c6b = t(c6a)`` (64 ch); dropout is off and batch norm uses its
  running statistics (evaluation);
- the three maps read out, 256 channels each: ``F1 = [a, p]`` (27 x 27), ``F2 = [c3, c4a[:64], c4b[:64]]``
  (25 x 25), ``F3 = [c5a[:64], c5b[:64], c6a[:64], c6b]`` (13 x 13).

Layer-wise fwRF (``fwrfs[subject]`` state dict: ``rf0``..``rf2`` (n_v, H_k, W_k), ``w`` (n_v, 768), ``b`` (n_v,)),
with ``g(x) = log(1 + |x|) * tanh(x)`` applied before pooling and after it, as BERG applies it::

    y[b, v] = b[v] + sum_k sum_c w[v, (k, c)] * g( sum_s softmax_s(rf_k[v])[s] * g(F_k[b, c, s]) )

``s`` runs over the H_k x W_k positions of map k and ``(k, c)`` over the 768 pooled features in map order. A split
ROI's two checkpoints are two such networks whose outputs are concatenated (split 1 first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._io import sha256_file
from ..backbones import FeatureExtractor
from ..errors import ModelFormatError
from ..storage.safe_pickle import restricted_torch_load
from . import BackboneAdapter

MAP_SIZES = (27, 25, 13)  # spatial size of the three feature maps on 227 x 227 inputs
MAP_CHANNELS = 256
INPUT_SIZE = 227


def g(x: torch.Tensor) -> torch.Tensor:
    """BERG's fwRF nonlinearity ``log(1 + |x|) * tanh(x)``."""
    return torch.log1p(x.abs()) * torch.tanh(x)


class _Trunk(nn.Module):
    """Batch norm -> dropout -> 3x3 convolution -> ReLU."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(n_in, eps=1e-5, momentum=0.25)
        self.drop1 = nn.Dropout2d(0.5)
        self.conv1 = nn.Conv2d(n_in, n_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(self.drop1(self.bn1(x))))


class _Prefilter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.conv2 = nn.Sequential(nn.Conv2d(64, 192, 5, padding=2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.conv1(x)
        return a, self.conv2(a)


class _Stage(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        self.tw = width
        self.bn1 = nn.BatchNorm2d(192, eps=1e-5, momentum=0.25)
        self.drop1 = nn.Dropout2d(0.5)
        self.conv3 = nn.Conv2d(192, 128, 3)
        self.pool1 = nn.MaxPool2d(3, 2, padding=1)
        self.conv4a, self.conv4b = _Trunk(128, 2 * width), _Trunk(2 * width, 2 * width)
        self.conv5a, self.conv5b = _Trunk(2 * width, 2 * width), _Trunk(2 * width, 2 * width)
        self.conv6a, self.conv6b = _Trunk(2 * width, 2 * width), _Trunk(2 * width, width)

    def forward(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.tw
        c3 = F.relu(self.conv3(self.drop1(self.bn1(p))))
        c4a = self.conv4a(c3)
        c4b = self.conv4b(c4a)
        c5a = self.conv5a(self.pool1(c4b))
        c5b = self.conv5b(c5a)
        c6a = self.conv6a(c5b)
        c6b = self.conv6b(c6a)
        return torch.cat([c3, c4a[:, :w], c4b[:, :w]], 1), torch.cat([c5a[:, :w], c5b[:, :w], c6a[:, :w], c6b], 1)


class GNet(nn.Module):
    """BERG's GNet encoder (see the module docstring): ``mu`` (1, 3, 1, 1) is subtracted from the input."""

    def __init__(self, mu: torch.Tensor, width: int = 64):
        super().__init__()
        self.mu = nn.Parameter(torch.as_tensor(mu, dtype=torch.float32), requires_grad=False)
        self.pre = _Prefilter()
        self.enc = _Stage(width)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three feature maps (B, 256, 27, 27), (B, 256, 25, 25), (B, 256, 13, 13) of x (B, 3, 227, 227)."""
        a, p = self.pre(x - self.mu)
        f2, f3 = self.enc(p)
        return [torch.cat([a, p], 1), f2, f3]


class LayerwiseFwrf(nn.Module):
    """BERG's layer-wise fwRF readout of ``n_voxels`` voxels (see the module docstring)."""

    def __init__(self, n_voxels: int, map_sizes: Sequence[int] = MAP_SIZES, n_features: int = 3 * MAP_CHANNELS):
        super().__init__()
        for k, size in enumerate(map_sizes):
            self.register_parameter(f"rf{k}", nn.Parameter(torch.ones(n_voxels, size, size), requires_grad=False))
        self.n_maps = len(map_sizes)
        self.w = nn.Parameter(torch.zeros(n_voxels, n_features), requires_grad=False)
        self.b = nn.Parameter(torch.zeros(n_voxels), requires_grad=False)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Responses (B, n_voxels) from the maps ``[(B, C_k, H_k, W_k)]``."""
        pooled = []
        for k, fmap in enumerate(maps):
            field = torch.softmax(getattr(self, f"rf{k}").flatten(1), dim=1)  # (n_v, S)
            pooled.append(torch.einsum("vs,bcs->vbc", field, g(fmap.flatten(2))))  # (n_v, B, C)
        phi = g(torch.cat(pooled, dim=2))  # (n_v, B, 768)
        return torch.einsum("vbc,vc->bv", phi, self.w) + self.b


def network_from_checkpoint(checkpoint: Mapping[str, Any], subject: int, source: str) -> tuple[GNet, LayerwiseFwrf]:
    """The encoder and the subject's fwRF of one checkpoint dict (``best_params``, ``stim_mean``), in eval mode.

    Raises
    ------
    ModelFormatError
        Keys missing, or state dicts that do not fit the architecture.
    """
    try:
        params, mu = checkpoint["best_params"], checkpoint["stim_mean"]
        encoder_state, fwrf_state = params["enc"], params["fwrfs"][subject]
    except (KeyError, TypeError) as exc:
        raise ModelFormatError(f"{source}: expected 'best_params' {{'enc', 'fwrfs': {{{subject}: ...}}}} and "
                               f"'stim_mean'; missing {exc}") from None
    mu = torch.as_tensor(mu, dtype=torch.float32)
    if tuple(mu.shape) != (1, 3, 1, 1):
        raise ModelFormatError(f"{source}: stim_mean has shape {tuple(mu.shape)}; expected (1, 3, 1, 1)")
    encoder, fwrf = GNet(mu), LayerwiseFwrf(int(torch.as_tensor(fwrf_state["b"]).shape[0]))
    try:
        encoder.load_state_dict(encoder_state)
        fwrf.load_state_dict(fwrf_state)
    except (RuntimeError, KeyError) as exc:
        raise ModelFormatError(f"{source}: the checkpoint does not fit BERG's GNet and fwRF: {exc}") from exc
    return encoder.eval(), fwrf.eval()


class _Networks(nn.Module):
    """Every network's three maps of one preprocessed batch: ``{"net{i}.map{k}": (B, 256, H_k, W_k)}``."""

    def __init__(self, encoders: Sequence[GNet]):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"net{i}.map{k}": fmap for i, encoder in enumerate(self.encoders)
                for k, fmap in enumerate(encoder(x))}


class FwrfReadout(nn.Module):
    """The fwRF readouts of several networks, their outputs concatenated and the selection's columns taken.

    Parameters
    ----------
    fwrfs : list of LayerwiseFwrf
        One per network, in the order of the extractor's ``net{i}`` nodes.
    columns : (n,) int64 tensor
        The column of the concatenated outputs each selected row is.
    """

    def __init__(self, fwrfs: Sequence[LayerwiseFwrf], columns: torch.Tensor):
        super().__init__()
        self.fwrfs = nn.ModuleList(fwrfs)
        self.nodes = [f"net{i}.map{k}" for i, f in enumerate(fwrfs) for k in range(f.n_maps)]
        self.register_buffer("columns", columns.long())

    @property
    def bias(self) -> torch.Tensor:
        """The first network's bias: the device and dtype of the readout."""
        return self.fwrfs[0].b

    @property
    def bytes_per_stimulus(self) -> int:
        """Bytes one stimulus occupies in a readout batch: its maps, every voxel's pooled features, the outputs."""
        maps = sum(MAP_CHANNELS * size * size for size in MAP_SIZES) * len(self.fwrfs)
        pooled = sum(f.w.shape[0] * f.w.shape[1] for f in self.fwrfs)
        return 4 * (maps + pooled + sum(f.b.shape[0] for f in self.fwrfs))

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Responses (B, n) from the maps, given as (B, 256, H, W) or flattened (B, 256 * H * W)."""
        outputs = []
        for i, fwrf in enumerate(self.fwrfs):
            maps = [features[f"net{i}.map{k}"] for k in range(fwrf.n_maps)]
            outputs.append(fwrf([m.reshape(m.shape[0], MAP_CHANNELS, -1).float() for m in maps]))
        return torch.cat(outputs, dim=1)[:, self.columns]


class GNetFwrfAdapter(BackboneAdapter):
    """BERG's GNet + fwRF networks, one per ROI (two for split ROIs), read from their checkpoints."""

    name = "gnet-fwrf"

    def build(self, card: Any, model_format: Any, model_dir: Path, subject: int, meta: Any, sel: Any,
              device: Any) -> tuple[FeatureExtractor, FwrfReadout]:
        row_roi, row_local = meta.arrays["row_roi"], meta.arrays["row_local"]
        names = meta.roi_names
        wanted = list(dict.fromkeys(names[int(i)] for i in row_roi[sel.rows]))
        encoders, fwrfs, starts, identity = [], [], {}, {}
        total = 0
        for roi in wanted:
            starts[roi], size = total, 0
            for path in model_format.checkpoints(card, model_dir, subject, roi):
                encoder, fwrf = network_from_checkpoint(restricted_torch_load(path), subject, str(path))
                encoders.append(encoder)
                fwrfs.append(fwrf)
                size += fwrf.b.shape[0]
                identity[path.name] = sha256_file(path)
            expected = int(meta.roi_rows(roi).size)
            if size != expected:
                raise ModelFormatError(f"{model_dir}: the networks of ROI {roi!r} predict {size} voxels, its mask "
                                       f"holds {expected}")
            total += size
        columns = np.array([starts[names[int(r)]] + int(j) for r, j in zip(row_roi[sel.rows], row_local[sel.rows])])
        nodes = [f"net{i}.map{k}" for i in range(len(encoders)) for k in range(len(MAP_SIZES))]
        extractor = FeatureExtractor(card, None, {"weights": "checkpoints", "checkpoints": identity},
                                     body=_Networks(encoders), nodes=nodes)
        return extractor.to(device), FwrfReadout(fwrfs, torch.from_numpy(columns)).to(device)

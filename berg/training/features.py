"""Backbone features for training, through the zoo's own extractor, cached on disk per stimulus.

Each stimulus's features are one safetensors file (``{node: (*node_shape,) float32}``) under
``<cache_dir>/<backbone key>/``, named by a hash of the stimulus id and the stimulus's bytes; the backbone
key hashes the architecture, weights identity, return nodes, preprocessing and frame count, so any
change there starts a fresh cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..backbones import build_feature_extractor
from ..cards import ModelCard
from ..errors import DatasetError
from ..storage.native import load_arrays, save_arrays
from ..stimuli import as_stimulus_set


def backbone_key(card: ModelCard, weights_identity: dict) -> str:
    """A 16-hex-digit key of everything that shapes the features."""
    d = card.data
    blob = json.dumps([d["backbone"]["architecture"], weights_identity, d["backbone"]["return_nodes"],
                       d["preprocessing"], d["stimulus"].get("n_frames")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stimulus_source(spec: dict, ids: list[str]):
    """(per-stimulus content digests, loader of a list of positions -> stimulus for ``as_stimulus_set``)."""
    base, stim = Path(spec["_base"]), spec["stimuli"]
    if stim["kind"] == "array":
        array = np.load(base / stim["path"], mmap_mode="r")
        if array.shape[0] != len(ids):
            raise DatasetError(f"stimuli file {stim['path']} holds {array.shape[0]} stimuli but field 'stimuli.ids' "
                               f"has {len(ids)} ids")
        digests = [hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest() for a in array]
        return digests, lambda pos: np.asarray(array[pos])
    files = [base / f for f in stim["files"]]
    digests = [hashlib.sha1(f.read_bytes()).hexdigest() if f.is_file() else "missing" for f in files]
    return digests, lambda pos: [files[p] for p in pos]


def extract_features(card: ModelCard, spec: dict, ids: list[str], cache_dir: str | Path, weights="default",
                     verify_hash: bool = True, device: str = "cpu", batch_size: int = 16
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Features of every stimulus at the card's return nodes, from cache where present.

    Parameters
    ----------
    card : ModelCard
        Gives the backbone, return nodes and preprocessing (exactly those of inference).
    spec : dict
        A loaded dataset spec (stimuli kind ``array``, ``images`` or ``videos``).
    ids : list of str
        Stimulus ids in source order.
    cache_dir : path
    weights, verify_hash, device
        As for :func:`berg.backbones.build_feature_extractor`.
    batch_size : int

    Returns
    -------
    features : dict node -> ndarray (n_stimuli, *node_shape) float32, rows in ``ids`` order
    weights_identity : dict
        Which backbone weights made them (see :func:`berg.backbones.resolve_weights`).
    """
    extractor = build_feature_extractor(card, weights, verify_hash, device)
    folder = Path(cache_dir) / backbone_key(card, extractor.weights_identity)
    digests, load = _stimulus_source(spec, ids)
    paths = [folder / f"{hashlib.sha1(f'{i}:{d}'.encode()).hexdigest()[:24]}.safetensors" for i, d in zip(ids, digests)]
    missing = [p for p, path in enumerate(paths) if not path.is_file()]
    for start in range(0, len(missing), batch_size):
        pos = missing[start:start + batch_size]
        stim_set = as_stimulus_set(load(pos), card.stimulus_kind, card.stimulus.n_frames)
        batch = stim_set.load(0, stim_set.n)
        batch = [b.to(device) for b in batch] if isinstance(batch, list) else batch.to(device)
        with torch.inference_mode():
            feats = extractor.extract(batch)
        for row, p in enumerate(pos):
            save_arrays(paths[p], {n: f[row].float().cpu().numpy() for n, f in feats.items()})
    stored = [load_arrays(p) for p in paths]
    return {n: np.stack([s[n] for s in stored]) for n in extractor.nodes}, extractor.weights_identity

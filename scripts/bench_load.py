"""Cold load of one fmri-bmd-s3d subject: berg's native files against BERG's pickled files, same content.

Writes synthetic files of the real sizes (the 100 x 4,084,096 float64 SVD, 108,219 voxels of subject 1)
in BERG's layout, converts them once, then times each of these three times in turn (best of three), with
every file evicted from the page cache before each:

- ``legacy_np_load_s``: BERG's way, ``np.load(allow_pickle=True).item()`` of the three pickled files;
- ``legacy_safe_s``: the same files through berg's restricted unpickler (:func:`load_legacy_npy`);
- ``native_ready_s``: what the encoder does before the first stimulus: the readout built from the native files (the
  projection memory-mapped, so its pages are read later, by the first encode);
- ``native_mmap_s``: the native files memory-mapped (``safetensors.torch.load_file``) with every byte touched.

``python scripts/bench_load.py [--quick] [--dir DIR]``; ``--quick`` uses 1/64 of the feature width.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import REPEATS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from berg.cards import load_card, validate_card  # noqa: E402
from berg.storage.legacy import convert_bmd_legacy, legacy_files, load_legacy_npy  # noqa: E402
from berg.encoder import _subject_model  # noqa: E402
from berg.storage.native import (NativeFormat, native_paths, projection_path, read_subject_metadata,  # noqa: E402
                                 readout_path)

SUBJECT = 1


def _card(quick: bool):
    card = load_card(REPO / "model_cards" / "fmri-bmd-s3d.yaml")
    if not quick:
        return card
    data = card.to_dict()
    data["backbone"]["feature_shapes"] = {n: [max(1, s[0] // 64), *s[1:]] for n, s in
                                          data["backbone"]["feature_shapes"].items()}
    return validate_card(data, "<quick card>")


def _write_legacy(model_dir: Path, card, rng: np.random.Generator) -> None:
    """Synthetic BERG files of the card's sizes (float64, as BERG stores them)."""
    width = sum(int(np.prod(s)) for s in card.data["backbone"]["feature_shapes"].values())
    k, n = card.data["readout"]["n_components"], card.data["n_voxels"][SUBJECT]
    shape = tuple(card.data["space"]["volume_shape"])
    var = rng.uniform(0.5, 2.0, width)
    shared = {"scaler_param": {"scale_": np.sqrt(var), "mean_": rng.random(width), "var_": var,
                               "n_features_in_": width, "n_samples_seen_": np.int64(1000)},
              "pca_param": {"components_": rng.random((k, width)) - 0.5, "explained_variance_": rng.random(k),
                            "explained_variance_ratio_": rng.random(k), "singular_values_": rng.random(k),
                            "n_features_in_": width}}
    flat = np.zeros(int(np.prod(shape)), dtype=bool)
    flat[rng.choice(flat.size, n, replace=False)] = True
    rois = {r: (np.sort(rng.choice(n, 2000, replace=False)),) for r in card.data["rois"]}
    encoding = {a: rng.random(n) for a in card.data["accuracy"]}
    metadata = {"fmri": {"group_mask": flat.reshape(shape), "sub_mask": flat.reshape(shape),
                         "sub_mask_affine": np.eye(4), "rois": rois}, "encoding_models": encoding}
    weights = {"coef_": rng.random((n, k)), "intercept_": rng.random(n), "n_features_in_": k}
    for rel, obj in zip(legacy_files(card, SUBJECT), (shared, weights, metadata)):
        (model_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(model_dir / rel, obj, allow_pickle=True)
        del obj


def _evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache, so the next read comes from disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _timed(paths: list[Path], load) -> float:
    _evict(paths)
    start = time.perf_counter()
    result = load()
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def _touch_all(tensors: dict) -> float:
    """Read one value in every 4 KiB page of every tensor, so the whole mapping is faulted in."""
    return float(sum(float(t.view(-1)[:: 4096 // t.element_size()].sum()) + float(t.view(-1)[-1])
                     for t in tensors.values()))


def run(quick: bool = False, workdir: str | os.PathLike | None = None) -> dict:
    """Build, convert and time; returns the timings in seconds and the ratios legacy / native."""
    from safetensors.torch import load_file as load_torch

    card = _card(quick)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        model_dir = Path(tmp)
        _write_legacy(model_dir, card, np.random.default_rng(0))
        start = time.perf_counter()
        convert_bmd_legacy(model_dir, card, SUBJECT)
        convert_s = time.perf_counter() - start
        legacy = [model_dir / r for r in legacy_files(card, SUBJECT)]
        native = native_paths(model_dir, SUBJECT, card)

        def native_ready():
            return _subject_model(card, NativeFormat(), model_dir, SUBJECT, None)

        def native_mmap():
            arrays = {**load_torch(str(projection_path(model_dir))), **load_torch(str(readout_path(model_dir, SUBJECT)))}
            _touch_all(arrays)
            return arrays, read_subject_metadata(model_dir, SUBJECT)

        loads = {"legacy_np_load_s": (legacy, lambda: [np.load(p, allow_pickle=True).item() for p in legacy]),
                 "legacy_safe_s": (legacy, lambda: [load_legacy_npy(p)[0] for p in legacy]),
                 "native_ready_s": (native, native_ready),
                 "native_mmap_s": (native, native_mmap)}
        times: dict[str, list[float]] = {name: [] for name in loads}
        for _ in range(REPEATS):  # interleaved, best of: every load sees the same machine state
            for name, (paths, load) in loads.items():
                times[name].append(_timed(paths, load))
        out = {"quick": quick, "legacy_bytes": sum(p.stat().st_size for p in legacy),
               "native_bytes": sum(p.stat().st_size for p in native), "convert_s": convert_s,
               **{name: min(t) for name, t in times.items()}}
    out["ratio_ready"] = out["legacy_np_load_s"] / out["native_ready_s"]
    out["ratio_mmap"] = out["legacy_np_load_s"] / out["native_mmap_s"]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/64 of the feature width")
    parser.add_argument("--dir", default=None, help="folder for the temporary files (default: the system temp dir)")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.dir), indent=1))

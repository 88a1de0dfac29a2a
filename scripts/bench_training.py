"""Benchmark training at the issue's scale: 108,219 voxels, 1,000 training stimuli, 100 components,
15 alphas, 5-fold CV (plus 100 test stimuli shown 3 times), through :func:`berg.training.train`.

``run(quick)`` returns seconds and peak RSS of the training process (data generation excluded);
``--compare`` also times the ridge CV alone against himalaya's ``RidgeCV`` (numpy and torch backends; himalaya is
in no extra of berg: ``pip install himalaya`` first).
Usage: python scripts/bench_training.py [--quick] [--compare]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import peak_rss_mb


def _peak_rss_gb() -> float:
    return peak_rss_mb() / 1024


def _train_child(spec: str, berg_dir: str) -> dict:
    from berg.training import train

    t0 = time.perf_counter()
    result = train(spec, berg_dir)
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_gb": round(_peak_rss_gb(), 2),
            "median_r_signal": result.summary["rois"]["signal"]["correlation"]["median"]}


def _ridge_child(method: str, n: int, k: int, v: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = x @ (rng.standard_normal((k, v)).astype(np.float32) * 0.1) + rng.standard_normal((n, v)).astype(np.float32)
    alphas = np.logspace(-1, 6, 15)
    t0 = time.perf_counter()
    if method == "berg":
        from berg.training import fit_ridge_cv

        fit_ridge_cv(x, y, alphas, 5)
    else:
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV

        set_backend(method.split("-")[1])
        RidgeCV(alphas=alphas, cv=5, solver_params={"n_targets_batch": 16384}).fit(x, y)
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_gb": round(_peak_rss_gb(), 2)}


def _in_child(func, *args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(func, args)


def run(quick: bool = False, compare: bool = False) -> dict:
    """Time training at scale (``quick``: 5,000 voxels, 200 training stimuli) and return the numbers."""
    from berg.training import make_synthetic, write_dataset

    n_vox, n_train = (5_000, 200) if quick else (108_219, 1_000)
    n_comp = 50 if quick else 100
    out: dict = {"n_voxels": n_vox, "n_train": n_train, "n_test": 100, "n_components": n_comp, "n_alphas": 15,
                 "n_folds": 5}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        feats = rng.standard_normal((n_train + 100, 64)) @ rng.standard_normal((64, 512))
        data = make_synthetic(n_train=n_train, n_test=100, n_voxels=n_vox, test_repeats=3, features=feats)
        spec = write_dataset(data, Path(tmp) / "data", template="fmri-bold5000-resnet18",
                             fit={"n_components": n_comp, "alphas": np.logspace(-1, 6, 15).tolist(), "n_folds": 5})
        del data
        out["train"] = _in_child(_train_child, str(spec), str(Path(tmp) / "berg"))
    if compare:
        out["ridge_cv_only"] = {m: _in_child(_ridge_child, m, n_train, n_comp, n_vox)
                                for m in ("berg", "himalaya-torch", "himalaya-numpy")}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Benchmark berg.training at scale.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compare", action="store_true", help="also time himalaya's RidgeCV")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.compare), indent=1))

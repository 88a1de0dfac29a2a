"""Readout at fmri-bmd-s3d size: berg's folded float32 torch readout vs the BERG-style chain.

The BERG-style chain is float64 scikit-learn ``StandardScaler.transform`` -> ``TruncatedSVD.transform`` ->
``LinearRegression.predict`` with the responses grown by ``np.append`` after every batch. Both sides run in their
own subprocess (so each peak RSS is its own), three times in turn (best time, largest peak), on the same
synthetic weights: a 100 x 4,084,096 projection and 108,219 voxels. Run ``python scripts/bench_readout.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from benchutil import REPEATS, peak_rss_mb

FEATURE_DIM = 4_084_096
N_COMPONENTS = 100
N_VOXELS = 108_219
BATCH = 10


def _weights(dim: int, n_voxels: int, dtype=np.float64):
    rng = np.random.default_rng(0)
    return {
        "mean": rng.normal(size=dim).astype(dtype),
        "scale": rng.uniform(0.5, 2, size=dim).astype(dtype),
        "components": rng.standard_normal(size=(N_COMPONENTS, dim), dtype=np.float32).astype(dtype, copy=False),
        "coef": rng.normal(size=(n_voxels, N_COMPONENTS)).astype(dtype),
        "intercept": rng.normal(size=n_voxels).astype(dtype),
    }


def _features(dim: int, n_batches: int):
    rng = np.random.default_rng(1)
    return [rng.standard_normal(size=(BATCH, dim), dtype=np.float32) for _ in range(n_batches)]


def berg_style_readout(dim: int, n_voxels: int, n_batches: int) -> tuple[float, np.ndarray]:
    """The BERG-style chain: seconds and responses (n_batches * 10, n_voxels) float64."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    w = _weights(dim, n_voxels)
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = w["mean"], w["scale"], w["scale"] ** 2
    scaler.n_features_in_ = dim
    svd = TruncatedSVD(n_components=N_COMPONENTS)
    svd.components_, svd.n_features_in_ = w["components"], dim
    regression = LinearRegression()
    regression.coef_, regression.intercept_, regression.n_features_in_ = w["coef"], w["intercept"], N_COMPONENTS
    batches = _features(dim, n_batches)
    start = time.perf_counter()
    responses = np.empty((0, n_voxels))
    for feats in batches:
        x = scaler.transform(feats.astype(np.float64))
        responses = np.append(responses, regression.predict(svd.transform(x)), 0)
    return time.perf_counter() - start, responses


def berg_readout(dim: int, n_voxels: int, n_batches: int) -> tuple[float, np.ndarray]:
    """berg's readout on the same weights: seconds and responses (n_batches * 10, n_voxels) float32."""
    import torch

    from berg.readout import Readout

    w = _weights(dim, n_voxels, np.float32)
    # the scaler folded into the projection as berg stores it, in place (no second copy of the 100 x d matrix)
    w["components"] /= w["scale"]
    bias = -(w["components"] @ w["mean"])
    readout = Readout(torch.from_numpy(w["coef"]), torch.from_numpy(w["intercept"]), {"features": dim},
                      {"features": torch.from_numpy(w["components"])}, torch.from_numpy(bias))
    del w
    batches = _features(dim, n_batches)
    start = time.perf_counter()
    responses = np.empty((BATCH * n_batches, n_voxels), dtype=np.float32)
    with torch.inference_mode():
        for i, feats in enumerate(batches):
            responses[i * BATCH:(i + 1) * BATCH] = readout({"features": torch.from_numpy(feats)}).numpy()
    return time.perf_counter() - start, responses


def _child(side: str, dim: int, n_voxels: int, n_batches: int) -> None:
    seconds = (berg_readout if side == "berg" else berg_style_readout)(dim, n_voxels, n_batches)[0]
    peak_mb = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


def _measure(side: str, dim: int, n_voxels: int, n_batches: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", side, str(dim), str(n_voxels), str(n_batches)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    """Measure both sides; returns table rows (time per batch of 10 clips, ratio, peak RSS)."""
    dim, n_batches = (FEATURE_DIM // 8, 3) if quick else (FEATURE_DIM, 5)
    runs = [(_measure("berg", dim, N_VOXELS, n_batches), _measure("berg-style", dim, N_VOXELS, n_batches))
            for _ in range(REPEATS)]  # interleaved, best of: both sides see the same machine state
    ours = {"seconds": min(r[0]["seconds"] for r in runs), "peak_rss_mb": max(r[0]["peak_rss_mb"] for r in runs)}
    anchor = {"seconds": min(r[1]["seconds"] for r in runs), "peak_rss_mb": max(r[1]["peak_rss_mb"] for r in runs)}
    size = f"{N_COMPONENTS}x{dim:,} projection, {N_VOXELS:,} voxels, {n_batches} batches of {BATCH}"
    return [
        {"scenario": "readout", "variant": "berg (float32 torch, folded)", "size": size,
         "seconds_per_batch": ours["seconds"] / n_batches, "peak_rss_mb": ours["peak_rss_mb"],
         "ratio": anchor["seconds"] / ours["seconds"], "ratio_meaning": "BERG-style time / berg time"},
        {"scenario": "readout", "variant": "BERG-style (float64 sklearn + np.append)", "size": size,
         "seconds_per_batch": anchor["seconds"] / n_batches, "peak_rss_mb": anchor["peak_rss_mb"]},
    ]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="an eighth of the feature width, 3 batches")
    for row in run(parser.parse_args().quick):
        print(json.dumps(row))

"""The folded readout equals the unfolded scaler -> SVD -> linear chain computed in float64 numpy."""

import numpy as np
import pytest
import torch

from berg.readout import Readout, fold_scaler_projection


def _chain(features: dict, mean, scale, components, coef, intercept):
    x = np.concatenate([features[n].reshape(len(features[n]), -1) for n in features], axis=1).astype(np.float64)
    return (((x - mean) / scale) @ components.T) @ coef.T + intercept


@pytest.mark.parametrize("n_out", [3, 400], ids=["folded-into-one-map", "projection-then-map"])
def test_folded_readout_matches_float64_chain(n_out):
    rng = np.random.default_rng(0)
    node_dims = {"a": 2 * 3 * 4, "b.cat": 50, "c": 7}
    d, k = sum(node_dims.values()), 10
    mean, scale = rng.normal(size=d), rng.uniform(0.5, 2, size=d)
    scale[5] = 0.0  # a constant feature: scikit-learn treats its scale as 1
    components = rng.normal(size=(k, d))
    coef, intercept = rng.normal(size=(n_out, k)), rng.normal(size=n_out)
    features = {"a": rng.normal(size=(6, 2, 3, 4)), "b.cat": rng.normal(size=(6, 50)), "c": rng.normal(size=(6, 7))}

    blocks, bias = fold_scaler_projection(components, mean, scale, node_dims)
    readout = Readout(torch.from_numpy(coef).float(), torch.from_numpy(intercept).float(), node_dims,
                      {n: torch.from_numpy(b) for n, b in blocks.items()}, torch.from_numpy(bias))
    folded = readout.weight is None
    assert folded == (n_out == 3)
    got = readout({n: torch.from_numpy(f).float() for n, f in features.items()}).numpy()
    want = _chain(features, mean, np.where(scale == 0, 1, scale), components, coef, intercept)
    assert got.shape == (6, n_out)
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-5


def test_direct_readout_splits_weight_by_node():
    rng = np.random.default_rng(1)
    node_dims = {"a": 4, "b": 6}
    weight, bias = rng.normal(size=(5, 10)), rng.normal(size=5)
    readout = Readout(torch.from_numpy(weight).float(), torch.from_numpy(bias).float(), node_dims)
    fa, fb = rng.normal(size=(3, 2, 2)), rng.normal(size=(3, 6))
    got = readout({"a": torch.from_numpy(fa).float(), "b": torch.from_numpy(fb).float()}).numpy()
    want = np.concatenate([fa.reshape(3, -1), fb], axis=1) @ weight.T + bias
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fold_rejects_mismatched_node_dims():
    with pytest.raises(ValueError, match="add up to 5"):
        fold_scaler_projection(np.ones((2, 6)), np.zeros(6), np.ones(6), {"a": 5})

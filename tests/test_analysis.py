import numpy as np
import pytest

from berg.analysis import (
    InvalidDataError,
    boundary_triggered_average,
    dct_basis,
    detrend,
    plot_similarity,
    timepoint_similarity,
)
from berg.errors import BergError


def _events(n_events=8, length=12, n_voxels=200, noise=0.5, seed=0):
    """TR x voxel data made of events with one stable pattern each; returns (data, boundaries)."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((n_events, n_voxels))
    data = np.repeat(patterns, length, axis=0) + noise * rng.standard_normal((n_events * length, n_voxels))
    return data, np.arange(1, n_events) * length


def test_similarity_is_pearson_across_voxels():
    data = np.random.default_rng(1).standard_normal((15, 40))
    np.testing.assert_allclose(timepoint_similarity(data), np.corrcoef(data), atol=1e-12)
    data[3, 7] = np.nan  # voxels with missing values are left out
    np.testing.assert_allclose(timepoint_similarity(data), np.corrcoef(np.delete(data, 7, axis=1)), atol=1e-12)


def test_dct_high_pass_removes_slow_drifts_only():
    n, tr = 200, 2.0
    t = np.arange(n) * tr
    rng = np.random.default_rng(2)
    fast = rng.standard_normal((n, 30))
    drift = np.outer(np.cos(2 * np.pi * t / 400.0), rng.standard_normal(30)) * 10 + 5
    cleaned = detrend(fast + drift, tr, cutoff_s=128.0)
    fast_hp = detrend(fast, tr, cutoff_s=128.0)
    assert np.abs(cleaned - fast_hp).max() < 0.05 * np.abs(fast).max()
    assert np.corrcoef(cleaned.ravel(), fast.ravel())[0, 1] > 0.97
    basis = dct_basis(n, tr, 128.0)
    assert basis.shape == (n, 7)  # k < 2 * 200 * 2 / 128 = 6.25, plus the constant
    np.testing.assert_allclose(basis.T @ basis, np.eye(7), atol=1e-12)
    # the drift dominates the raw similarity; after the high-pass the matrix is that of the fast part
    sim = timepoint_similarity(fast + drift, tr=tr, high_pass_s=128.0)
    np.testing.assert_allclose(sim, timepoint_similarity(fast_hp), atol=0.05)
    with pytest.raises(InvalidDataError, match="tr"):
        timepoint_similarity(fast, high_pass_s=128.0)


def test_boundary_average_finds_the_drop_at_true_boundaries():
    data, boundaries = _events()
    sim = timepoint_similarity(data)
    result = boundary_triggered_average(sim, boundaries, window=3, n_permutations=500)
    assert result.lags.tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert result.curve[3] == pytest.approx(result.statistic)
    assert result.statistic < 0.2 and result.curve[[0, 1, 2, 4, 5, 6]].min() > 0.6
    assert result.p_value <= 1 / 501 * 10
    assert result.null.shape == (500,)
    # boundaries placed in the middle of events show no drop
    shifted = boundary_triggered_average(sim, boundaries - 6, window=3, n_permutations=500)
    assert shifted.p_value > 0.05 and shifted.statistic > 0.6
    greater = boundary_triggered_average(sim, boundaries, n_permutations=500, alternative="greater")
    assert greater.p_value > 0.9


@pytest.mark.parametrize("call, match", [
    (lambda: timepoint_similarity(np.ones(5)), "shape"),
    (lambda: boundary_triggered_average(np.eye(10), [0]), "boundaries"),
    (lambda: boundary_triggered_average(np.eye(10), [3], alternative="lower"), "alternative"),
    (lambda: boundary_triggered_average(np.ones((4, 5)), [1]), "square"),
    (lambda: dct_basis(10, 2.0, -1), "cutoff_s"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(BergError, match=match):
        call()


def test_plot_similarity_draws_the_matrix():
    data, boundaries = _events(n_events=3, length=5)
    sim = timepoint_similarity(data)
    fig = plot_similarity(sim, tr=2.0, boundaries=boundaries, title="untrained backbone")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), sim)
    assert ax.get_title() == "untrained backbone" and ax.get_xlabel() == "time (s)"
    assert len(ax.lines) == 2 * len(boundaries)


@pytest.mark.parametrize("kwargs", [{"window": "wide"}, {"n_permutations": None}, {"boundaries": [1.5, 3]}])
def test_non_numeric_arguments_get_typed_errors(kwargs):
    from berg.analysis import InvalidDataError, boundary_triggered_average

    sim = np.eye(6)
    args = {"boundaries": [2, 4], **kwargs}
    with pytest.raises(InvalidDataError):
        boundary_triggered_average(sim, **args)


def test_non_numeric_tr_gets_a_typed_error():
    from berg.analysis import InvalidDataError, dct_basis

    with pytest.raises(InvalidDataError, match=r"tr='2s' is not valid: expected a finite number > 0"):
        dct_basis(10, "2s", 128.0)

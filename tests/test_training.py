"""Training math on synthetic data of known accuracy: noise ceilings, ridge CV, explained variance."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from berg.training import TrainingError, fit_projection, fit_ridge_cv, make_synthetic, noise_ceiling, accuracy_metrics
from berg.training.metrics import average_repeats, group_trials
from berg.training.ridge import kfold_indices


def _split(data):
    ids, inverse, _ = group_trials(data.trial_stimulus)
    y = average_repeats(data.trials, inverse, len(ids))
    row = {s: i for i, s in enumerate(data.stimulus_ids)}
    x = data.features[[row[s] for s in ids]]
    test = np.isin(ids, data.test_ids)
    return x[~test], y[~test], x[test], y[test]


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(n_train=500, n_test=400, n_features=20, n_voxels=600, noise_fraction=0.25,
                          signal_var=(0.3, 2.0), noise_var=(0.5, 1.5), test_repeats=(2, 3, 5), seed=3)


def test_noise_ceiling_matches_closed_form(synthetic):
    test = np.isin(synthetic.trial_stimulus, synthetic.test_ids)
    nc = noise_ceiling(synthetic.trials[test], synthetic.trial_stimulus[test])
    err = np.abs(nc - synthetic.noise_ceiling)
    assert err.mean() <= 0.03
    assert np.all((nc >= 0) & (nc <= 1))
    # the closed form itself: mixed repeats enter through mean(1 / n_i)
    sv, nv = synthetic.signal_var, synthetic.noise_var
    inv_n = np.mean(1.0 / np.array([2, 3, 5] * 134)[:400])
    np.testing.assert_allclose(synthetic.noise_ceiling, sv / (sv + nv * inv_n))


def test_noise_ceiling_edge_cases():
    stim = np.repeat(np.arange(50), 2)
    signal = np.random.default_rng(0).standard_normal((50, 1))
    assert noise_ceiling(np.repeat(signal, 2, axis=0), stim)[0] == pytest.approx(1.0)  # noise-free repeats
    with pytest.raises(TrainingError, match="at least twice"):
        noise_ceiling(np.zeros((5, 2)), np.arange(5))


def test_signal_and_noise_voxels_reach_their_ceilings(synthetic):
    x_tr, y_tr, x_te, y_te = _split(synthetic)
    proj = fit_projection(x_tr, 20)
    fit = fit_ridge_cv(proj.transform(x_tr), y_tr)
    pred = proj.transform(x_te) @ fit.coef.T + fit.intercept
    test = np.isin(synthetic.trial_stimulus, synthetic.test_ids)
    m = accuracy_metrics(y_te, pred, noise_ceiling(synthetic.trials[test], synthetic.trial_stimulus[test]))
    assert np.median(m["explained_variance"][synthetic.is_signal]) >= 0.8
    assert np.median(m["explained_variance"][~synthetic.is_signal]) <= 0.05
    assert np.all(m["explained_variance"] <= 1.0)
    # strong ridge on noise voxels, weak on signal voxels
    assert np.median(fit.alpha[~synthetic.is_signal]) > 100 * np.median(fit.alpha[synthetic.is_signal])


def test_chosen_alpha_grows_with_noise():
    noise = np.repeat([0.1, 1.0, 10.0, 100.0], 150)
    data = make_synthetic(n_train=300, n_test=20, n_features=20, n_voxels=600, noise_fraction=0.0, signal_var=1.0,
                          noise_var=noise, seed=5)
    x_tr, y_tr, _, _ = _split(data)
    fit = fit_ridge_cv(x_tr, y_tr)
    medians = [np.median(fit.alpha[noise == v]) for v in (0.1, 1.0, 10.0, 100.0)]
    assert all(a < b for a, b in zip(medians, medians[1:])), medians


def test_ridge_cv_matches_scikit_learn():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((90, 6))
    y = (x @ rng.standard_normal((6, 8)) * np.linspace(0.05, 2, 8) + rng.standard_normal((90, 8))).astype(np.float32)
    alphas = np.logspace(-1, 4, 8)
    fit = fit_ridge_cv(x, y, alphas, n_folds=4)
    folds = kfold_indices(90, 4)
    for v in range(8):
        errors = []
        for a in alphas:
            e = 0.0
            for val in folds:
                tr = np.setdiff1d(np.arange(90), val)
                model = Ridge(alpha=a).fit(x[tr], y[tr, v])
                e += ((model.predict(x[val]) - y[val, v]) ** 2).sum()
            errors.append(e)
        assert fit.alpha[v] == alphas[int(np.argmin(errors))]
        ref = Ridge(alpha=fit.alpha[v]).fit(x, y[:, v])
        np.testing.assert_allclose(fit.coef[v], ref.coef_, rtol=1e-4, atol=1e-5)
        assert fit.intercept[v] == pytest.approx(ref.intercept_, abs=1e-4)


def test_projection_is_pca_of_scaled_training_features():
    x = np.random.default_rng(4).standard_normal((40, 12)) * np.arange(1, 13)
    proj = fit_projection(x, 5)
    scores = proj.transform(x)
    np.testing.assert_allclose(scores.mean(0), 0, atol=1e-10)
    var = scores.var(0)
    assert np.all(np.diff(var) <= 1e-9)  # components in decreasing variance
    with pytest.raises(TrainingError, match="n_components=40"):
        fit_projection(x, 40)


def test_metrics_values():
    y = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    pred = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    m = accuracy_metrics(y, pred, np.array([0.5, 0.0]))
    np.testing.assert_allclose(m["correlation"], [1.0, 0.0])  # negative r set to 0
    np.testing.assert_allclose(m["coefficient_of_determination"], [1.0, 1 - 8 / 2])
    np.testing.assert_allclose(m["explained_variance"], [1.0, 0.0])  # capped; NC = 0 guarded


def test_bad_options():
    with pytest.raises(TrainingError, match="alphas"):
        fit_ridge_cv(np.zeros((10, 2)), np.zeros((10, 3)), alphas=[1.0, -1.0])
    with pytest.raises(TrainingError, match="n_folds=1"):
        fit_ridge_cv(np.zeros((10, 2)), np.zeros((10, 3)), n_folds=1)
    with pytest.raises(TrainingError, match="noise_fraction"):
        make_synthetic(noise_fraction=1.5)
    with pytest.raises(TrainingError, match=r"signal_var=\(0.5, 1.0, 2.0\) is not valid: a \(low, high\) tuple"):
        make_synthetic(signal_var=(0.5, 1.0, 2.0))


def test_truth_in_top_components_is_reachable_with_that_many_components():
    rng = np.random.default_rng(6)
    feats = 3 * rng.standard_normal((500, 5)) @ rng.standard_normal((5, 40)) + rng.standard_normal((500, 40))
    data = make_synthetic(n_train=400, n_test=100, n_voxels=200, noise_fraction=0.0, signal_var=1.0,
                          noise_var=0.5, test_repeats=4, features=feats, truth_components=5, seed=6)
    x_tr, y_tr, x_te, y_te = _split(data)
    proj = fit_projection(x_tr, 5)
    fit = fit_ridge_cv(proj.transform(x_tr), y_tr)
    r2 = accuracy_metrics(y_te, proj.transform(x_te) @ fit.coef.T + fit.intercept)["r2"]
    assert np.median(r2 / data.noise_ceiling) >= 0.8

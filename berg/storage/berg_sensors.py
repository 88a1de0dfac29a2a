"""BERG's files of a scaler -> PCA -> one linear regression per repetition model of sensor time courses (EEG).

The layout BERG's creation code writes for its THINGS EEG2 model, one pair of pickled dicts per subject, named by
the card's ``legacy_files.subject`` patterns:

``encoding_models_weights/weights_subject-{SS}.npy``
    ``scaler_param`` {``scale_``, ``mean_`` …}; ``pca_param``, in one of two layouts told apart by its keys: one
    PCA {``components_`` (k, d), ``mean_`` (d,) …} that every repetition shares (the older files), or one per
    repetition {``"rep-1"``: {``components_`` …}, …, ``"rep-R"``: …} (the newer ones); ``reg_param``
    {``"rep-r"``: {``coef_`` (n_channels * n_times, k), ``intercept_`` (n_channels * n_times,)}}, its outputs
    channel-major (channel, then time).
``metadata/metadata_subject-{SS}.npy``
    ``eeg`` {``ch_names`` (n_channels,), ``times`` (n_times,) s}, ``encoding_models``
    {``correlation_averaged_repetitions`` (n_channels, n_times), ``correlation_single_repetitions``
    (R, n_channels, n_times), ``train_img_info``, ``test_img_info`` (dicts of image lists)}.

They are read by the restricted unpickler and converted once into native files beside them. The projection holds
every repetition's PCA, stacked: k rows when one is shared, R x k when each repetition has its own, in which case
the readout is block-diagonal (repetition r reads only its own k components). Outputs are repetition-major, then
the card's channel order, then time; the metadata's coordinates are ``repetition``, ``channel`` and ``time``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from .legacy import BergSubjectPairFormat, _field, fold_projection, load_legacy_npy
from .native import SubjectMetadata, projection_path, readout_path, save_arrays, write_subject_metadata

_TIME_TOLERANCE_S = 1e-4  # stored times must match the card's to a fiftieth of a 5 ms sample
_IMAGE_INFO = ("train_img_info", "test_img_info")


def _repetition_keys(n: int) -> list[str]:
    return [f"rep-{r + 1}" for r in range(n)]


def _per_repetition(stored: Any, what: str, n: int, path: Path) -> list[Any]:
    """The ``rep-1`` … ``rep-n`` entries of a dict, in order."""
    keys = _repetition_keys(n)
    if not isinstance(stored, dict) or sorted(stored) != sorted(keys):
        have = sorted(stored) if isinstance(stored, dict) else type(stored).__name__
        raise ModelFormatError(f"{path}: {what} must hold {', '.join(keys)} (the card's {n} repetitions); found "
                               f"{have}")
    return [stored[k] for k in keys]


def pca_layout(pca_param: Any, repetitions: int, path: Path) -> list[Any]:
    """The PCA parameter dicts of ``pca_param``: one shared (``components_`` among its keys) or one per repetition
    (``rep-1`` … keys), told apart by the keys; raise :class:`ModelFormatError` for anything else."""
    if isinstance(pca_param, dict) and "components_" in pca_param:
        return [pca_param]
    if isinstance(pca_param, dict) and any(str(k).startswith("rep-") for k in pca_param):
        return _per_repetition(pca_param, "pca_param", repetitions, path)
    have = sorted(pca_param) if isinstance(pca_param, dict) else type(pca_param).__name__
    raise ModelFormatError(f"{path}: pca_param must hold one PCA ('components_', 'mean_' …) or one per repetition "
                           f"('rep-1' …); found {have}")


def _stacked_projection(scaler: Any, pcas: list[Any], card: Any, path: Path) -> dict[str, np.ndarray]:
    """Every PCA folded with the scaler (:func:`fold_projection`), their rows stacked in repetition order."""
    folded = [fold_projection(scaler, pca, card, path, centred=True) for pca in pcas]
    if len(folded) == 1:
        return folded[0]
    if len({f["bias"].shape for f in folded}) != 1:
        raise ModelFormatError(f"{path}: the repetitions' PCAs keep different numbers of components")
    return {name: np.concatenate([f.pop(name) for f in folded]) for name in list(folded[0])}


def _channel_order(stored: Any, card_channels: list[str], path: Path) -> np.ndarray:
    """The stored index of each of the card's channels; the stored names must be the card's, in any order."""
    names = [str(n) for n in np.asarray(stored).reshape(-1).tolist()]
    if sorted(names) != sorted(card_channels) or len(set(names)) != len(names):
        extra = sorted(set(names) - set(card_channels))
        lacking = sorted(set(card_channels) - set(names))
        raise ModelFormatError(f"{path}: eeg.ch_names must be the card's {len(card_channels)} channels; it has "
                               f"{len(names)} names (not in the card: {extra}; missing: {lacking})")
    return np.array([names.index(c) for c in card_channels], dtype=np.int64)


def _check_times(stored: Any, expected: np.ndarray, path: Path) -> None:
    times = np.asarray(stored, dtype=np.float64).reshape(-1)
    if times.shape != expected.shape or not np.allclose(times, expected, rtol=0, atol=_TIME_TOLERANCE_S):
        raise ModelFormatError(f"{path}: eeg.times ({times.size} values from {times[:1]} s) do not match the card's "
                               f"{expected.size} time points from {expected[0]} s in {expected[1] - expected[0]:g} s "
                               "steps")


def _regressions(reg_param: Any, space: Any, order: np.ndarray, k: int, shared: bool, path: Path
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The readout (R * C * T, k or R * k) and its bias, rows repetition-major in the card's channel order."""
    n_rep, n_ch, n_t = space.repetitions, len(space.channels), space.times.size
    width = k if shared else n_rep * k
    weight = np.zeros((n_rep, n_ch, n_t, width), dtype=np.float32)
    bias = np.empty((n_rep, n_ch, n_t), dtype=np.float32)
    for r, reg in enumerate(_per_repetition(reg_param, "reg_param", n_rep, path)):
        coef = np.asarray(_field(reg, "coef_", path))
        intercept = np.asarray(_field(reg, "intercept_", path)).reshape(-1)
        if coef.shape != (n_ch * n_t, k) or intercept.shape != (n_ch * n_t,):
            raise ModelFormatError(f"{path}: reg_param['rep-{r + 1}'] coef_ {coef.shape} and intercept_ "
                                   f"{intercept.shape} do not match ({n_ch * n_t}, {k}) and ({n_ch * n_t},)")
        columns = slice(0, k) if shared else slice(r * k, (r + 1) * k)
        weight[r, :, :, columns] = coef.reshape(n_ch, n_t, k)[order]
        bias[r] = intercept.reshape(n_ch, n_t)[order]
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ModelFormatError(f"{path}: the regressions hold NaN or infinite values")
    return weight.reshape(-1, width), bias.reshape(-1)


def _accuracy(encoding: Any, space: Any, order: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    """Per-output correlations: each repetition's own, and that of the repetition average at the output's channel
    and time (the same for every repetition)."""
    n_rep, n_ch, n_t = space.repetitions, len(space.channels), space.times.size
    single = np.asarray(_field(encoding, "correlation_single_repetitions", path), dtype=np.float64)
    averaged = np.asarray(_field(encoding, "correlation_averaged_repetitions", path), dtype=np.float64)
    if single.shape != (n_rep, n_ch, n_t) or averaged.shape != (n_ch, n_t):
        raise ModelFormatError(f"{path}: correlation_single_repetitions {single.shape} and "
                               f"correlation_averaged_repetitions {averaged.shape} must be {(n_rep, n_ch, n_t)} and "
                               f"{(n_ch, n_t)}")
    return {"accuracy.correlation": single[:, order].reshape(-1).astype(np.float32),
            "accuracy.correlation_averaged_repetitions":
                np.broadcast_to(averaged[order], (n_rep, n_ch, n_t)).reshape(-1).astype(np.float32)}


def _plain(value: Any) -> Any:
    """Lists, strings and numbers of a pickled image-info value, for JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    return value.item() if isinstance(value, np.generic) else value


class BergRepetitionsFormat(BergSubjectPairFormat):
    """BERG's per-subject scaler -> PCA -> per-repetition regression files (see the module docstring)."""

    name = "berg-pca-repetitions"

    def convert(self, model_dir: Path, card: Any, subject: int, rels: list[str], weights_path: Path,
                meta_path: Path) -> None:
        space = card.space.space
        meta, meta_sha = load_legacy_npy(meta_path)
        eeg, encoding = _field(meta, "eeg", meta_path), _field(meta, "encoding_models", meta_path)
        order = _channel_order(_field(eeg, "ch_names", meta_path), space.channels, meta_path)
        _check_times(_field(eeg, "times", meta_path), space.times, meta_path)
        accuracy = _accuracy(encoding, space, order, meta_path)
        weights, weights_sha = load_legacy_npy(weights_path)
        pcas = pca_layout(_field(weights, "pca_param", weights_path), space.repetitions, weights_path)
        projection = _stacked_projection(_field(weights, "scaler_param", weights_path), pcas, card, weights_path)
        k = projection["bias"].shape[0] // len(pcas)
        weight, bias = _regressions(_field(weights, "reg_param", weights_path), space, order, k, len(pcas) == 1,
                                    weights_path)
        del weights
        n = weight.shape[0]
        shape = (space.repetitions, len(space.channels), space.times.size)
        grid = np.unravel_index(np.arange(n), shape)
        arrays = {"repetition": grid[0].astype(np.int16), "channel": grid[1].astype(np.int16),
                  "time": grid[2].astype(np.int16), "row_voxel": np.arange(n, dtype=np.int64), **accuracy}
        info = {"model_id": card.model_id, "subject": subject, "n_voxels": n, "n_rows": n,
                "space": card.space.as_dict(), "rois": [], "accuracy": {"correlation": "Pearson r, per repetition",
                                         "correlation_averaged_repetitions": "Pearson r of the repetition average"},
                "sensor_layout": {"ch_names": space.channels, "times": space.times.tolist(),
                                  "repetitions": space.repetitions},
                "pca_layout": "shared" if len(pcas) == 1 else "per-repetition",
                "image_info": {name: _plain(encoding[name]) for name in _IMAGE_INFO if name in encoding},
                "provenance": {"converted_from": "BERG legacy files",
                               "sources": {rels[0]: weights_sha, rels[1]: meta_sha}}}
        save_arrays(projection_path(model_dir, subject), projection)
        save_arrays(readout_path(model_dir, subject), {"weight": weight, "bias": bias})
        write_subject_metadata(model_dir, subject, SubjectMetadata(info=info, arrays=arrays))

"""A BERG fsaverage model tree made the way BERG's creation code makes one, with our own code.

The procedure of BERG's ``02_train_encoding_models/train_dataset-nsd_fsaverage/model-vit_b_32/train_encoding.py``
and ``03_test_encoding_models/train_dataset-nsd_fsaverage/01_test_encoding.py``, on synthetic data:

1. per subject (seed 20200220 + subject): features of the train and test images -> scikit-learn
   ``StandardScaler`` fit on train -> ``PCA(n_components, random_state=20200220)`` fit on the scaled train
   features; PCA features cast to float32;
2. one ``LinearRegression`` per hemisphere from the PCA features to the train betas (NaN set to 0);
3. the attributes of the three saved as BERG's ``weights_subject-SS.npy`` dict with ``np.save``;
4. test accuracy per vertex: Pearson r (negatives set to 0), r², the noise ceiling ``ncsnr² / (ncsnr² + 1/3)``
   with zeros replaced by 1e-14, explained variance ``100 * r2 / nc`` capped at 100; with the ncsnr, the ROIs
   (``np.where(label == value)[0]`` per hemisphere, as NSD's ROI volumes mapped to fsaverage give them) and the
   image splits, saved as BERG's ``metadata_subject-SS.npy`` dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

from _berg_producer import _pearson_columns, pca_dict, save_pickled, scaler_dict

HEMIS = ("lh", "rh")


def _roi_labels(rng: np.random.Generator, names: list[str], n: int, empty_right: str | None) -> dict:
    """Per hemisphere, a label per vertex (0: none; i + 1: ROI i), as NSD's ROI files give them."""
    labels = {}
    for h in HEMIS:
        label = np.zeros(n, dtype=np.int64)
        for i, name in enumerate(names):
            if h == "rh" and name == empty_right:
                continue
            label[rng.choice(n, size=5 + 2 * i, replace=False)] = i + 1
        labels[h] = label
    return labels


def write_surface_tree(model_dir: Path, card: Any, subjects: list[int], features: dict[int, dict[str, np.ndarray]],
                       empty_right: str = "mTL-words") -> dict[str, Any]:
    """Write BERG's files for ``subjects`` under ``model_dir``; ``features[s]`` has ``train`` and ``test`` arrays
    (n, width). ROI ``empty_right`` has no right-hemisphere vertex. Returns the saved dicts by relative path."""
    n = card.data["space"]["n_vertices"]
    k = card.data["readout"]["n_components"]
    names = [r for r in card.data["rois"]]
    files: dict[str, Any] = {}
    for s in subjects:
        seed = 20200220 + s
        rng = np.random.default_rng(seed)
        train, test = features[s]["train"], features[s]["test"]
        scaler = StandardScaler().fit(train)
        pca = PCA(n_components=k, random_state=20200220).fit(scaler.transform(train))
        pca_train = pca.transform(scaler.transform(train)).astype(np.float32)
        pca_test = pca.transform(scaler.transform(test)).astype(np.float32)
        weights = {"scaler_param": scaler_dict(scaler), "pca_param": pca_dict(pca)}
        encoding: dict[str, Any] = {"train_img_num": np.arange(len(train)), "val_img_num": np.arange(3),
                                    "test_img_num": np.arange(len(train), len(train) + len(test))}
        fmri: dict[str, Any] = {}
        labels = _roi_labels(rng, names, n, empty_right)
        for h in HEMIS:
            mapping = rng.normal(0, 1, (k, n)).astype(np.float32)
            betas_train = np.nan_to_num(pca_train @ mapping + rng.normal(0, 1, (len(train), n)))
            betas_test = np.nan_to_num(pca_test @ mapping + rng.normal(0, 1, (len(test), n)))
            reg = LinearRegression().fit(pca_train, betas_train)
            weights[f"{h}_reg_param"] = {"coef_": reg.coef_, "intercept_": reg.intercept_,
                                         "n_features_in_": reg.n_features_in_}
            ncsnr = rng.uniform(0, 1.5, n).astype(np.float32)
            ncsnr[:4] = 0.0
            correlation = _pearson_columns(betas_test, reg.predict(pca_test))
            correlation[correlation < 0] = 0
            r2 = correlation ** 2
            noise_ceiling = ncsnr.astype(np.float64) ** 2 / (ncsnr.astype(np.float64) ** 2 + 1 / 3)
            noise_ceiling[noise_ceiling == 0] = 1e-14
            explained = np.divide(r2, noise_ceiling) * 100
            explained[explained > 100] = 100
            fmri[f"{h}_ncsnr"] = ncsnr
            fmri[f"{h}_fsaverage_rois"] = {name: np.where(labels[h] == i + 1)[0] for i, name in enumerate(names)}
            encoding.update({f"{h}_correlation": correlation, f"{h}_r2": r2, f"{h}_noise_ceiling": noise_ceiling,
                             f"{h}_explained_variance": explained})
        files[f"encoding_models_weights/weights_subject-{s:02d}.npy"] = weights
        files[f"metadata/metadata_subject-{s:02d}.npy"] = {"fmri": fmri, "encoding_models": encoding}
    for rel, obj in files.items():
        save_pickled(model_dir / rel, obj)
    return files


def reference_responses(files: dict[str, Any], subject: int, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BERG's chain in float64 on the tree's own arrays: scaler -> PCA (centred) -> each hemisphere's regression;
    (n, width) -> ((n, n_vertices), (n, n_vertices))."""
    w = files[f"encoding_models_weights/weights_subject-{subject:02d}.npy"]
    scaled = (features.astype(np.float64) - w["scaler_param"]["mean_"]) / w["scaler_param"]["scale_"]
    z = (scaled - w["pca_param"]["mean_"]) @ w["pca_param"]["components_"].astype(np.float64).T
    return tuple(z @ w[f"{h}_reg_param"]["coef_"].T + w[f"{h}_reg_param"]["intercept_"] for h in HEMIS)

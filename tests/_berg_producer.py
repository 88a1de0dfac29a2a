"""A BERG-format model tree made the way BERG's creation code makes one (fmri-bmd-s3d), with our own code.

The procedure of BERG's ``02_train_encoding_models/train_dataset-bmd/model-s3d`` and
``03_test_encoding_models/train_dataset-bmd`` scripts, on synthetic data:

1. stimulus features (train, test) -> scikit-learn ``StandardScaler`` fit on train -> ``TruncatedSVD`` fit on the
   scaled train features (``random_state=20200220``); their attributes saved with ``np.save`` as ``pca_weights.npy``;
2. per subject, ``LinearRegression`` from the SVD features to the train responses; ``coef_``, ``intercept_`` and
   ``n_features_in_`` saved as ``weights_sub-SS.npy``;
3. masks written as uncompressed ``.nii`` files and read back with ``nib.load(...).get_fdata().astype(bool)``
   (so they are ``numpy.memmap`` objects, and pickle as such); ROI entries are pickled ``.pkl`` files read back
   with ``pickle.load``: by default the triple (3-D indices, flat volume indices, the loaded NIfTI image);
4. test accuracy per voxel: Pearson r (negatives set to 0), r², noise ceilings in percent (as BMD stores them),
   explained variance ``r2 / nc * 100`` capped at 100 with a zero noise ceiling replaced by 1e-14; the metadata dict
   (with the newer ``*_header`` / ``*_affine`` keys) saved with ``np.save`` as ``metadata_sub-SS.npy``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

ROI_FORMS = ("triple", "columns_tuple", "columns", "volume_flat", "volume_where")
AFFINE = np.array([[-2.5, 0.0, 0.0, 77.5], [0.0, 2.5, 0.0, -112.5], [0.0, 0.0, 2.5, -70.0], [0.0, 0.0, 0.0, 1.0]])


def save_pickled(path: Path, obj: Any) -> None:
    """Save an object the way BERG does (``np.save`` of a pickled object)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, obj, allow_pickle=True)


def _nifti_roundtrip(path: Path, volume: np.ndarray) -> nib.Nifti1Image:
    """Write ``volume`` as an uncompressed float64 ``.nii`` with a real header and load it back (memory-mapped)."""
    image = nib.Nifti1Image(volume.astype(np.float64), AFFINE)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(AFFINE, code=4)
    image.set_sform(AFFINE, code=4)
    nib.save(image, path)
    return nib.load(path)


def _roi_entry(form: str, roi_volume: np.ndarray, sub_mask: np.ndarray, image: nib.Nifti1Image) -> Any:
    flat_volume = np.flatnonzero(roi_volume)
    columns = np.flatnonzero(roi_volume[sub_mask])
    return {"triple": lambda: (np.where(roi_volume), flat_volume, image),
            "columns_tuple": lambda: (columns,),
            "columns": lambda: columns,
            "volume_flat": lambda: flat_volume,
            "volume_where": lambda: np.where(roi_volume)}[form]()


def scaler_dict(scaler: Any) -> dict[str, Any]:
    """A fitted scikit-learn ``StandardScaler``'s attributes as BERG's ``scaler_param`` dict."""
    return {"scale_": scaler.scale_, "mean_": scaler.mean_, "var_": scaler.var_,
            "n_features_in_": scaler.n_features_in_, "n_samples_seen_": scaler.n_samples_seen_}


def pca_dict(pca: Any) -> dict[str, Any]:
    """A fitted scikit-learn ``PCA``'s attributes as BERG's ``pca_param`` dict."""
    return {"components_": pca.components_, "explained_variance_": pca.explained_variance_,
            "explained_variance_ratio_": pca.explained_variance_ratio_, "singular_values_": pca.singular_values_,
            "mean_": pca.mean_, "n_components_": pca.n_components_, "n_samples_": pca.n_samples_,
            "noise_variance_": pca.noise_variance_, "n_features_in_": pca.n_features_in_}


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a ** 2).sum(0) * (b ** 2).sum(0))


def write_berg_tree(model_dir: Path, card: Any, subjects: list[int], scratch: Path, seed: int = 0,
                    roi_form: str = "triple", n_train: int = 24, n_test: int = 8) -> dict[str, Any]:
    """Write BERG's files for ``subjects`` under ``model_dir`` (BMD's own files go to ``scratch``).

    Returns the saved dicts keyed by path relative to ``model_dir``.
    """
    rng = np.random.default_rng(seed)
    shapes = card.data["backbone"]["feature_shapes"]
    width = sum(int(np.prod(shapes[n])) for n in card.data["backbone"]["return_nodes"])
    volume_shape = tuple(card.data["space"]["volume_shape"])
    k = card.data["readout"]["n_components"]
    features_train = rng.normal(1.0, 2.0, (n_train, width)).astype(np.float32)
    features_test = rng.normal(1.0, 2.0, (n_test, width)).astype(np.float32)
    scaler = StandardScaler().fit(features_train)
    svd = TruncatedSVD(n_components=k, random_state=20200220).fit(scaler.transform(features_train))
    svd_train = svd.transform(scaler.transform(features_train))
    svd_test = svd.transform(scaler.transform(features_test))
    del features_train, features_test
    files: dict[str, Any] = {"encoding_models_weights/pca_weights.npy": {
        "scaler_param": {"scale_": scaler.scale_, "mean_": scaler.mean_, "var_": scaler.var_,
                         "n_features_in_": scaler.n_features_in_, "n_samples_seen_": scaler.n_samples_seen_},
        "pca_param": {"components_": svd.components_, "explained_variance_": svd.explained_variance_,
                      "explained_variance_ratio_": svd.explained_variance_ratio_,
                      "singular_values_": svd.singular_values_, "n_features_in_": svd.n_features_in_}}}
    scratch.mkdir(parents=True, exist_ok=True)
    group_volume = np.zeros(volume_shape, dtype=bool)
    for s in subjects:
        n = card.data["n_voxels"][s]
        flat = np.zeros(int(np.prod(volume_shape)), dtype=bool)
        flat[rng.choice(flat.size, n, replace=False)] = True
        sub_volume = flat.reshape(volume_shape)
        group_volume |= sub_volume
        mapping = rng.normal(0, 1, (k, n))
        fmri_train = svd_train @ mapping + rng.normal(0, 1, (n_train, n))
        fmri_test = svd_test @ mapping + rng.normal(0, 1, (n_test, n))
        reg = LinearRegression().fit(svd_train, fmri_train)
        files[f"encoding_models_weights/weights_sub-{s:02d}.npy"] = {
            "coef_": reg.coef_, "intercept_": reg.intercept_, "n_features_in_": reg.n_features_in_}
        sub_image = _nifti_roundtrip(scratch / f"sub-{s:02d}_mask-nonans_space-MNI152.nii", sub_volume)
        sub_mask = sub_image.get_fdata().astype(bool)
        rois = {}
        for i, name in enumerate(card.data["rois"]):
            roi_volume = np.zeros(volume_shape, dtype=bool)
            roi_volume[np.unravel_index(rng.choice(np.flatnonzero(sub_mask), min(n, 4 + 3 * i), replace=False),
                                        volume_shape)] = True
            roi_image = _nifti_roundtrip(scratch / f"sub-{s:02d}_ROI-{name}.nii", roi_volume)
            pkl = scratch / f"sub-{s:02d}_ROI-{name}_indices.pkl"
            with open(pkl, "wb") as fh:
                pickle.dump(_roi_entry(roi_form, roi_volume, sub_mask, roi_image), fh)
            with open(pkl, "rb") as fh:
                rois[name] = pickle.load(fh)
        correlation = _pearson_columns(fmri_test, reg.predict(svd_test))
        correlation[correlation < 0] = 0
        r2 = correlation ** 2
        noise_ceilings = {f"noiseceiling_task_{t}": rng.uniform(0, 90, n)
                          for t in ("train_n_1", "train_n_3", "test_n_1", "test_n_10")}
        nc = noise_ceilings["noiseceiling_task_test_n_10"]
        nc[:3] = 0.0
        explained = r2 / np.where(nc == 0, 1e-14, nc) * 100
        explained[explained > 100] = 100
        files[f"metadata/metadata_sub-{s:02d}.npy"] = {
            "fmri": {"sub_mask": sub_mask, "sub_mask_header": sub_image.header, "sub_mask_affine": sub_image.affine,
                     "rois": rois},
            "encoding_models": {**noise_ceilings, "correlation": correlation, "r2": r2,
                                "explained_variance": explained}}
    group_image = _nifti_roundtrip(scratch / "groupMask_space-MNI152.nii", group_volume)
    group_mask = group_image.get_fdata().astype(bool)
    for s in subjects:
        files[f"metadata/metadata_sub-{s:02d}.npy"]["fmri"].update(
            group_mask=group_mask, group_mask_header=group_image.header, group_mask_affine=group_image.affine)
    for rel, obj in files.items():
        save_pickled(model_dir / rel, obj)
    return files


def reference_responses(files: dict[str, Any], subject: int, features: np.ndarray) -> np.ndarray:
    """BERG's chain in float64 on the tree's own arrays: scaler -> SVD -> linear; (n, width) -> (n, n_voxels)."""
    shared = files["encoding_models_weights/pca_weights.npy"]
    weights = files[f"encoding_models_weights/weights_sub-{subject:02d}.npy"]
    scaled = (features.astype(np.float64) - shared["scaler_param"]["mean_"]) / shared["scaler_param"]["scale_"]
    return (scaled @ shared["pca_param"]["components_"].T) @ weights["coef_"].T + weights["intercept_"]


def roi_columns(files: dict[str, Any], subject: int, name: str) -> np.ndarray:
    """Response columns of an ROI, from the tree's masks (the voxels of its 3-D indices), sorted."""
    fmri = files[f"metadata/metadata_sub-{subject:02d}.npy"]["fmri"]
    entry, mask = fmri["rois"][name], np.asarray(fmri["sub_mask"])
    roi_volume = np.zeros(mask.shape, dtype=bool)
    if isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[2], nib.Nifti1Image):
        roi_volume[entry[0]] = True
    elif isinstance(entry, tuple) and len(entry) == 3:
        roi_volume[entry] = True
    else:
        values = np.asarray(entry[0] if isinstance(entry, tuple) else entry)
        if values.max() < mask.sum():
            return np.sort(values)
        roi_volume.flat[values] = True
    return np.flatnonzero(roi_volume[mask])

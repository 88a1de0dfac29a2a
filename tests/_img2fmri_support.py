"""Fixtures for the img2fmri tests: the verified wheel (cached like the importer caches it) and one import."""

from __future__ import annotations

import gzip
import pickle
import warnings
import zipfile

import nibabel as nib
import numpy as np
import pytest

from berg.errors import MissingFilesError
from berg.storage.img2fmri import import_img2fmri, locate_wheel

ROIS = ("EarlyVis", "OPA", "LOC", "RSC", "PPA")
_SESSION: dict = {}  # one import per test session, whichever test module asks first


@pytest.fixture(scope="session")
def img2fmri_wheel():
    """Path of the verified img2fmri 1.0 wheel (from the cache, or fetched into it with pip)."""
    try:
        return locate_wheel()
    except MissingFilesError as exc:  # OfflineError included
        pytest.fail(f"img2fmri wheel not available (run `berg import-img2fmri` once, with network): {exc}")


@pytest.fixture(scope="session")
def img2fmri_model_dir(img2fmri_wheel, tmp_path_factory):
    """The model folder of one import into a fresh berg_dir, shared by the session."""
    if "model_dir" not in _SESSION:
        _SESSION["model_dir"] = import_img2fmri(tmp_path_factory.mktemp("berg_dir"), wheel=img2fmri_wheel)
    return _SESSION["model_dir"]


class Wheel:
    """The wheel's own files, read the way img2fmri reads them (scikit-learn unpickling allowed here only)."""

    def __init__(self, path):
        self.zip = zipfile.ZipFile(path)

    def nifti(self, member: str) -> nib.Nifti1Image:
        return nib.Nifti1Image.from_bytes(gzip.decompress(self.zip.read(f"img2fmri/{member}")))

    def ridge(self, subject: int, roi: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickled with scikit-learn 1.1.1
            return pickle.loads(self.zip.read(f"img2fmri/models/subj{subject}_{roi}_model.pkl"))

    def mask(self, subject: int, name: str) -> np.ndarray:
        member = f"derivatives/bool_masks/derivatives_spm_sub-CSI{subject}_sub-CSI{subject}_mask-{name}.nii.gz"
        return self.nifti(member).get_fdata() > 0

    def subject_volume(self, subject: int, features: np.ndarray, rois=ROIS) -> np.ndarray:
        """img2fmri's subject-space prediction: (*mask_shape, n) volumes, NaN outside the ROIs."""
        volume = None
        for roi in rois:
            pred = self.ridge(subject, roi).predict(features)
            lh, rh = self.mask(subject, "LH" + roi), self.mask(subject, "RH" + roi)
            if volume is None:
                volume = np.full(lh.shape + (len(features),), np.nan)
            n_lh = int(lh.sum())
            for mask, values in ((lh, pred[:, :n_lh]), (rh, pred[:, n_lh:])):
                volume[mask] = np.nanmean(np.stack([volume[mask], values.T]), axis=0)
        return volume

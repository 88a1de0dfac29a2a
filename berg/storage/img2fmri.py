"""Importer of the img2fmri 1.0 models (PyPI wheel) into berg's native format.

The wheel ships 15 scikit-learn Ridge pickles (3 subjects x 5 ROIs, 512 ResNet-18 features in, LH then RH
mask voxels out), subject-space ROI masks, T1 images, FNIRT warps to MNI152 and the MNI reference grid.
:func:`import_img2fmri` writes, under ``<berg_dir>/encoding_models/modality-fmri/train_dataset-bold5000/
model-resnet18/``, for each subject ``S`` (tag ``sub-0S``) the files of :mod:`berg.storage.native`:

- ``encoding_models_weights/berg_readout_sub-0S.safetensors``: ``weight`` (n_rows, 512) and ``bias`` (n_rows,),
  every ROI model's outputs stacked in the order EarlyVis, OPA, LOC, RSC, PPA (each LH then RH, as
  published); ``whole_brain.weight`` (n_voxels, 512) and ``whole_brain.bias``: the union of the ROI voxels,
  with img2fmri's pairwise-nanmean rule for voxels in several ROIs folded in;
- ``metadata/berg_metadata_sub-0S.{json,safetensors}``: ``voxel_ijk`` (union voxels, C order),
  ``row_voxel``, ``roi.{name}`` for EarlyVis..PPA and LHEarlyVis, RHEarlyVis, ...; provenance in the JSON;
- ``metadata/berg_mni_sub-0S.safetensors``: the subject -> MNI nearest-neighbour index map, ``mni_voxel``
  (m,) int64 flat C-order indices on the 91 x 109 x 91 grid and ``source_voxel`` (m,) int64 rows of
  ``voxel_ijk``, with ``volume_shape`` and ``affine`` (JSON) in the file header. ROI / hemisphere membership
  of the mapped voxels is ``np.isin(source_voxel, row_voxel[roi.{LH|RH}{ROI}])``.

``metadata/berg_import.json`` is written last and marks the folder complete. The folder is built as a
temporary sibling and renamed into place, so an interrupted import leaves no model behind.
The Ridge pickles are read by berg's restricted unpickler (:mod:`berg.storage.safe_pickle`): a Ridge loads as an
inert record of its attributes, and nothing of scikit-learn is imported.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .._io import atomic_dir, write_json
from ..config import berg_version
from ..errors import MissingFilesError, ModelFormatError, UnsafePickleError
from ..mni import HEMISPHERES, fnirt_t1_voxels, nanmean_fold, resample_index
from . import wheels
from .formats import GroupSubject
from .native import (METADATA_DIR, NativeFormat, SubjectMetadata, load_arrays, readout_path, save_arrays,
                     subject_tag, write_subject_metadata)
from .safe_pickle import PickledRecord, restricted_load
from .wheels import WheelSpec

log = logging.getLogger(__name__)

IMPORTER_VERSION = 1
MARKER = Path("metadata", "berg_import.json")
FORMAT = "img2fmri-wheel"


def img2fmri_card(berg_dir: str | os.PathLike | None = None) -> Any:
    """The zoo's card of this format (the first, by model id, among the packaged cards and ``berg_dir``'s)."""
    from ..registry import available_cards

    cards = [c for c in available_cards(berg_dir).values() if c.format == FORMAT]
    if not cards:
        raise MissingFilesError(f"no model card of format {FORMAT!r} in the zoo")
    return cards[0]


def wheel_rois(card: Any) -> tuple[str, ...]:
    """The wheel's ROI models, in filling order: the card's ROI names without a hemisphere prefix."""
    return tuple(r for r in card.rois if not r.startswith(HEMISPHERES))


def mni_map_path(model_dir: Path, subject: int) -> Path:
    """Path of a subject's subject -> MNI index map (``metadata/berg_mni_sub-0S.safetensors``)."""
    return Path(model_dir) / METADATA_DIR / f"berg_mni_{subject_tag(int(subject))}.safetensors"


def locate_wheel(wheel: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 offline: bool | None = None, card: Any = None) -> Path:
    """:func:`berg.storage.wheels.locate_wheel` for the wheel of ``card`` (default :func:`img2fmri_card`)."""
    return wheels.locate_wheel(WheelSpec.of(card if card is not None else img2fmri_card(), FORMAT), wheel,
                               cache_dir, offline)


RIDGE_CLASS = "sklearn.linear_model._ridge.Ridge"


@dataclass(frozen=True)
class RidgeParams:
    """A Ridge model's parameters: ``y = x @ coef.T + intercept``."""

    coef: np.ndarray       # (n_out, 512) float32
    intercept: np.ndarray  # (n_out,) float32
    alpha: float


def read_ridge(data: bytes, name: str = "pickle", n_features: int = 512) -> RidgeParams:
    """Parameters of a pickled scikit-learn Ridge with ``n_features`` inputs, read without executing code or
    importing scikit-learn."""
    try:
        obj = restricted_load(io.BytesIO(data), name)
    except UnsafePickleError:
        raise
    except Exception as exc:  # a corrupt pickle raises anything
        raise ModelFormatError(f"{name}: cannot read the Ridge pickle ({exc!r})") from exc
    is_ridge = isinstance(obj, PickledRecord) and obj.class_name == RIDGE_CLASS and isinstance(obj.state, dict)
    attrs = obj.state if is_ridge else {}
    coef, intercept = attrs.get("coef_"), np.atleast_1d(attrs.get("intercept_", np.nan))
    if not (isinstance(coef, np.ndarray) and coef.ndim == 2 and coef.shape[1] == n_features
            and coef.dtype.kind == "f" and intercept.shape == coef.shape[:1] and intercept.dtype.kind == "f"):
        raise ModelFormatError(f"{name}: expected a Ridge with coef_ (n, {n_features}) and intercept_ (n,), "
                               f"got {type(obj).__name__} with coef_ {getattr(coef, 'shape', None)}")
    return RidgeParams(coef.astype(np.float32), intercept.astype(np.float32), float(attrs.get("alpha", np.nan)))


class WheelReader:
    """Reads members of the img2fmri wheel and records the sha256 of each one read."""

    def __init__(self, path: Path, n_features: int):
        self.path = Path(path)
        self.zip = zipfile.ZipFile(self.path)
        self.n_features = n_features
        self.hashes: dict[str, str] = {}

    def read(self, member: str) -> bytes:
        name = f"img2fmri/{member}"
        try:
            data = self.zip.read(name)
        except KeyError:
            raise ModelFormatError(f"{self.path} has no member {name}") from None
        self.hashes[name] = hashlib.sha256(data).hexdigest()
        return data

    def nifti(self, member: str) -> nib.Nifti1Image:
        data = self.read(member)
        return nib.Nifti1Image.from_bytes(gzip.decompress(data) if member.endswith(".gz") else data)

    def ridge(self, subject: int, roi: str) -> RidgeParams:
        member = f"models/subj{subject}_{roi}_model.pkl"
        return read_ridge(self.read(member), member, self.n_features)

    def mask(self, subject: int, name: str) -> nib.Nifti1Image:
        csi = f"sub-CSI{subject}"
        return self.nifti(f"derivatives/bool_masks/derivatives_spm_{csi}_{csi}_mask-{name}.nii.gz")

    def mni_reference(self, subject: int) -> nib.Nifti1Image:
        return self.nifti(f"derivatives/sub{subject}.anat/T1_to_MNI_nonlin.nii.gz")

    def t1_to_mni(self, subject: int) -> tuple[nib.Nifti1Image, np.ndarray]:
        """The T1 image, and the T1 voxel (91, 109, 91, 3) int64 that each MNI voxel samples."""
        t1 = self.nifti(f"derivatives/T1/sub-CSI{subject}_ses-16_anat_sub-CSI{subject}_ses-16_T1w.nii.gz")
        coeff = self.nifti(f"derivatives/sub{subject}.anat/T1_to_MNI_nonlin_coeff.nii.gz")
        premat = np.loadtxt(io.StringIO(self.read(f"derivatives/sub{subject}.anat/T1_nonroi2roi.mat").decode()))
        return t1, fnirt_t1_voxels(coeff, t1, premat, self.mni_reference(subject))


def _subject_files(card: Any, reader: WheelReader, subject: int) -> tuple[dict, SubjectMetadata, dict, dict]:
    """Readout arrays, metadata, MNI map arrays and MNI header of one subject."""
    rois = wheel_rois(card)
    masks = {h + roi: reader.mask(subject, h + roi) for roi in rois for h in HEMISPHERES}
    first = masks[HEMISPHERES[0] + rois[0]]
    for name, img in masks.items():
        if img.shape[:3] != first.shape[:3] or not np.allclose(img.affine, first.affine):
            raise ModelFormatError(f"{reader.path}: mask {name} of subject {subject} is on another grid")
    shape, affine = first.shape[:3], first.affine
    inside = {name: np.asarray(img.dataobj)[..., 0] > 0 if img.ndim == 4 else np.asarray(img.dataobj) > 0
              for name, img in masks.items()}
    union = np.logical_or.reduce(list(inside.values()))
    voxel_of = np.full(shape, -1, np.int64)
    voxel_of[union] = np.arange(int(union.sum()))
    weights, biases, steps, roi_rows, alphas, start = [], [], [], {}, {}, 0
    for roi in rois:
        ridge = reader.ridge(subject, roi)
        sizes = [int(inside[h + roi].sum()) for h in HEMISPHERES]
        if ridge.coef.shape[0] != sum(sizes):
            raise ModelFormatError(f"{reader.path}: subj{subject}_{roi} has {ridge.coef.shape[0]} outputs but its "
                                   f"LH/RH masks hold {sizes[0]} + {sizes[1]} voxels")
        weights.append(ridge.coef)
        biases.append(ridge.intercept)
        alphas[roi] = ridge.alpha
        for h, size in zip(HEMISPHERES, sizes):
            rows = np.arange(start, start + size, dtype=np.int64)
            steps.append((rows, voxel_of[inside[h + roi]]))
            roi_rows[h + roi] = rows
            start += size
        roi_rows[roi] = np.concatenate([roi_rows[h + roi] for h in HEMISPHERES])
    weight, bias = np.concatenate(weights), np.concatenate(biases)
    fold = nanmean_fold(steps, int(union.sum()), weight.shape[0])
    readout = {"weight": weight, "bias": bias,
               "whole_brain.weight": (fold @ weight.astype(np.float64)).astype(np.float32),
               "whole_brain.bias": (fold @ bias.astype(np.float64)).astype(np.float32)}
    names = list(rois) + [h + roi for roi in rois for h in HEMISPHERES]
    arrays = {"voxel_ijk": np.argwhere(union).astype(np.int32),
              "row_voxel": np.concatenate([voxels for _, voxels in steps]),
              **{f"roi.{name}": roi_rows[name] for name in names}}
    info = {"model_id": card.model_id, "subject": subject, "n_voxels": int(union.sum()),
            "n_rows": int(weight.shape[0]), "volume_shape": [int(v) for v in shape], "affine": affine.tolist(),
            "space": card.space.as_dict(), "rois": names, "units": card.units, "accuracy": {},
            "ridge_alpha": alphas}
    t1, t1_voxel = reader.t1_to_mni(subject)
    in_t1 = np.all((t1_voxel >= 0) & (t1_voxel < np.asarray(t1.shape[:3])), axis=-1)
    flat = resample_index(t1_voxel, t1.affine, affine, shape)
    source = np.where(in_t1 & (flat >= 0), voxel_of.reshape(-1)[np.maximum(flat, 0)], -1).reshape(-1)
    mni_voxel = np.flatnonzero(source >= 0)
    reference = reader.mni_reference(subject)
    header = {"volume_shape": json.dumps([int(v) for v in reference.shape[:3]]),
              "affine": json.dumps(reference.affine.tolist())}
    return readout, SubjectMetadata(info, arrays), {"mni_voxel": mni_voxel, "source_voxel": source[mni_voxel]}, header


def _is_complete(model_dir: Path, spec: WheelSpec) -> bool:
    try:
        marker = json.loads((model_dir / MARKER).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(marker, dict) and marker.get("sha256") == spec.sha256
            and marker.get("importer_version") == IMPORTER_VERSION
            and all((model_dir / rel).is_file() for rel in marker.get("files", [])))


def import_img2fmri(berg_dir: str | os.PathLike, wheel: str | os.PathLike | None = None,
                    force: bool = False, card: Any = None) -> Path:
    """Write a model from the img2fmri 1.0 wheel into ``berg_dir``.

    Parameters
    ----------
    berg_dir : path
        The berg data folder.
    wheel : path, optional
        The wheel file; otherwise found or fetched by :func:`locate_wheel`.
    force : bool
        Rebuild even when a complete import from the same wheel is there.
    card : ModelCard, optional
        The model to write (its id, folder, subjects, ROIs, feature count and wheel); default
        :func:`img2fmri_card`.

    Returns
    -------
    Path of the model folder. A complete import (same wheel hash, same importer version) is left untouched.
    """
    from filelock import FileLock

    card = card if card is not None else img2fmri_card(berg_dir)
    spec = WheelSpec.of(card, FORMAT)
    target = Path(berg_dir) / card.folder
    if not force and _is_complete(target, spec):
        return target
    path = locate_wheel(wheel, card=card)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if not force and _is_complete(target, spec):  # another process finished it meanwhile
            return target
        with atomic_dir(target) as build:
            _write_model(card, build, path)
    log.info("imported %s into %s", spec.filename, target)
    return target


def _write_model(card: Any, model_dir: Path, wheel: Path) -> None:
    spec = WheelSpec.of(card, FORMAT)
    reader, read = WheelReader(wheel, card.backbone.n_features), {}
    for subject in card.subjects:
        reader.hashes = {}
        readout, meta, mni_map, mni_header = _subject_files(card, reader, subject)
        save_arrays(readout_path(model_dir, subject), readout)
        save_arrays(mni_map_path(model_dir, subject), mni_map, mni_header)
        meta.info["provenance"] = {"source": f"PyPI {spec.filename}", "wheel": spec.filename, "sha256": spec.sha256,
                                   "files": dict(sorted(reader.hashes.items())), "berg_version": berg_version(),
                                   "importer_version": IMPORTER_VERSION}
        write_subject_metadata(model_dir, subject, meta)
        read.update(reader.hashes)
    files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    write_json(model_dir / MARKER, {"model_id": card.model_id, "wheel": spec.filename, "sha256": spec.sha256,
                                    "importer_version": IMPORTER_VERSION, "berg_version": berg_version(),
                                    "files": files, "read": dict(sorted(read.items()))})


def read_mni_map(model_dir: Path, subject: int) -> dict[str, Any]:
    """A subject's index map: ``mni_voxel`` (m,) flat C-order MNI indices, ``source_voxel`` (m,) the subject output
    (a row of ``voxel_ijk``) whose value each takes (every other MNI voxel takes 0), ``mni_shape`` and
    ``mni_affine`` of the MNI grid."""
    from safetensors import safe_open

    path = mni_map_path(model_dir, subject)
    arrays = load_arrays(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
        return {"mni_voxel": arrays["mni_voxel"], "source_voxel": arrays["source_voxel"],
                "mni_shape": tuple(json.loads(header["volume_shape"])),
                "mni_affine": np.asarray(json.loads(header["affine"]), dtype=np.float64)}
    except (KeyError, ValueError) as exc:
        raise ModelFormatError(f"{path}: malformed subject -> MNI index map ({exc!r})") from exc


class Img2fmriFormat(NativeFormat):
    """img2fmri's wheel, imported once into native files plus one subject -> MNI index map per subject (the inputs
    of the group-level readout)."""

    name = FORMAT

    def source_files(self, card: Any, subject: int) -> list[str]:
        return []

    def prepare(self, card: Any, berg_dir: Path, subject: int) -> None:
        import_img2fmri(berg_dir, card=card)

    def needed_files(self, card: Any, model_dir: Path, subject: int | str) -> list[Path]:
        files = super().needed_files(card, model_dir, subject)
        return files + ([mni_map_path(model_dir, s) for s in card.subjects] if subject == "group" else [])

    def group_subjects(self, card: Any, model_dir: Path) -> list[GroupSubject]:
        return [GroupSubject(s, self.subject_metadata(card, model_dir, s), load_arrays(readout_path(model_dir, s)),
                             read_mni_map(model_dir, s)) for s in card.subjects]

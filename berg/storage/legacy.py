"""BERG's legacy files: a safe reader for its pickled ``.npy`` dicts, and conversion to the native format.

BERG saves Python dicts with ``np.save``: a ``.npy`` header declaring a 0-d object array, followed by a
pickle. :func:`load_legacy_npy` reads them with berg's restricted unpickler; every global it does not admit is
refused with :class:`~berg.errors.UnsafePickleError` before anything is called. Nothing from the file is executed.

The unpickler is :mod:`berg.storage.safe_pickle`: numpy arrays (a pickled ``numpy.memmap`` comes back as a plain
array), plain containers, and inert records of the nibabel images and headers BERG's metadata holds.

:func:`convert_bmd_legacy` turns a scaler -> truncated SVD -> linear regression model (BERG's BOLD Moments layout) into
berg's native files (see :mod:`berg.storage.native`) beside the originals.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format
from safetensors import safe_open

from ..errors import MissingFilesError, ModelFormatError, UnsafePickleError
from .legacy_metadata import VoxelSpace, accuracy_arrays, roi_rows, volume_affine
from .safe_pickle import restricted_load
from .native import (NativeFormat, SubjectMetadata, native_complete, projection_path, readout_path, save_arrays,
                     write_subject_metadata)

log = logging.getLogger(__name__)

_CHUNK_COLUMNS = 1 << 18  # columns of the SVD converted at a time: 100 x 262,144 float64 = 200 MB


class _HashingReader:
    """A read-only file wrapper that feeds everything read through sha256."""

    def __init__(self, fh: Any) -> None:
        self._fh, self.sha256 = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.sha256.update(data)
        return data

    def readinto(self, buf: Any) -> int:
        n = self._fh.readinto(buf)
        self.sha256.update(memoryview(buf)[:n])
        return n

    def readline(self, limit: int = -1) -> bytes:
        data = self._fh.readline(limit)
        self.sha256.update(data)
        return data


def load_legacy_npy(path: str | Path) -> tuple[Any, str]:
    """Read a BERG ``.npy`` file without executing its pickle.

    Returns
    -------
    value : object
        The stored object: the dict for a pickled dict, else the array.
    sha256 : str
        Hex digest of the whole file, computed in the same pass.

    Raises
    ------
    UnsafePickleError
        The pickle asks for anything but numpy arrays and plain containers.
    ModelFormatError
        The file is not a readable ``.npy`` file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            fh = _HashingReader(raw)
            version = npy_format.read_magic(fh)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            if dtype.hasobject:
                value = restricted_load(fh, str(path))
                if not isinstance(value, np.ndarray):
                    raise ModelFormatError(f"{path}: the pickle holds a {type(value).__name__}, not an array")
                value = value.item() if value.shape == () else value
            else:
                count = int(np.prod(shape))
                value = np.frombuffer(fh.read(count * dtype.itemsize), dtype=dtype, count=count)
                value = value.reshape(shape, order="F" if fortran else "C")
            while fh.read(1 << 24):  # hash any trailing bytes
                pass
    except (UnsafePickleError, ModelFormatError):
        raise
    except OSError as exc:
        raise MissingFilesError(f"cannot read legacy model file {path}: {exc}") from exc
    except Exception as exc:  # malformed header, truncated pickle, bad array state
        raise ModelFormatError(f"cannot read legacy model file {path}: {type(exc).__name__}: {exc}") from exc
    return value, fh.sha256.hexdigest()


def legacy_files(card: Any, subject: int) -> list[str]:
    """Paths, relative to the model folder, of the legacy files one subject needs (shared first)."""
    files = card.legacy_files
    return list(files["shared"]) + [f.replace("{SS}", f"{int(subject):02d}") for f in files["subject"]]


def subject_file_pair(model_dir: Path, card: Any, subject: int) -> tuple[list[str], Path, Path]:
    """The relative names and paths of a subject's two BERG files (weights, then metadata), checked on disk.

    Raises
    ------
    ModelFormatError
        The card's ``legacy_files`` do not name exactly two per-subject files.
    MissingFilesError
        A file is not on disk.
    """
    rels = legacy_files(card, subject)
    if len(rels) != 2:
        raise ModelFormatError(f"model card {card.path}: 'legacy_files' must name two per-subject files (weights, "
                               f"metadata) and no shared one; got {rels}")
    missing = [r for r in rels if not (model_dir / r).is_file()]
    if missing:
        raise MissingFilesError(f"model {card.model_id!r}, subject {subject}: missing BERG files {missing} under "
                                f"{model_dir}")
    return rels, model_dir / rels[0], model_dir / rels[1]


def _field(obj: Any, key: str, path: Path) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ModelFormatError(f"{path}: expected key {key!r}, found {have}")
    return obj[key]


def _float_vector(value: Any, n: int, default: float, what: str, path: Path) -> np.ndarray:
    if value is None:
        return np.full(n, default)
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise ModelFormatError(f"{path}: {what} must be {n} finite values, got shape {arr.shape}")
    return arr


def fold_projection(scaler: Any, pca: Any, card: Any, src: Path, centred: bool) -> dict[str, np.ndarray]:
    """BERG's scaler and PCA / truncated-SVD parameter dicts folded into native projection arrays.

    ``weight.{node}`` (k, d_node) float32 is ``components[:, node columns] / scale`` and ``bias`` (k,) is
    ``-components @ (mean / scale + pca_mean)`` (``pca_mean`` only when ``centred``: a PCA, not an SVD), built in
    column chunks so that only the source matrix is held in float64.
    """
    comps = np.asarray(_field(pca, "components_", src))
    sizes = list(card.backbone.feature_sizes.items())
    width = sum(d for _, d in sizes)
    if comps.ndim != 2 or comps.shape[1] != width:
        raise ModelFormatError(f"{src}: pca_param.components_ has shape {comps.shape}, the card expects (k, {width})")
    k = comps.shape[0]
    if k != card.readout.n_components:
        log.warning("%s holds %d components, the card says %d", src, k, card.readout.n_components)
    if not np.isfinite(comps).all():
        raise ModelFormatError(f"{src}: pca_param.components_ holds NaN or infinite values")
    if not isinstance(scaler, dict):
        raise ModelFormatError(f"{src}: scaler_param must be a dict, found {type(scaler).__name__}")
    mean = _float_vector(scaler.get("mean_"), width, 0.0, "scaler_param.mean_", src)
    scale = _float_vector(scaler.get("scale_"), width, 1.0, "scaler_param.scale_", src)
    if (scale == 0).any():
        raise ModelFormatError(f"{src}: scaler_param.scale_ holds zeros")
    offset = mean / scale
    if centred:
        offset = offset + _float_vector(_field(pca, "mean_", src), width, 0.0, "pca_param.mean_", src)
    arrays, bias, start = {}, np.zeros(k), 0
    for node, d in sizes:
        out = np.empty((k, d), dtype=np.float32)
        for first in range(0, d, _CHUNK_COLUMNS):
            cols = slice(start + first, start + min(d, first + _CHUNK_COLUMNS))
            block = comps[:, cols] / scale[cols]
            out[:, first:first + block.shape[1]] = block
            bias -= comps[:, cols] @ offset[cols]
        arrays[f"weight.{node}"] = out
        start += d
    arrays["bias"] = bias.astype(np.float32)
    return arrays


def _convert_projection(model_dir: Path, card: Any, rel: str) -> None:
    """Fold the standard scaler into the SVD components, per return node, and save them as float32."""
    src = model_dir / rel
    legacy, sha = load_legacy_npy(src)
    arrays = fold_projection(_field(legacy, "scaler_param", src), _field(legacy, "pca_param", src), card, src,
                             centred=False)
    del legacy
    save_arrays(projection_path(model_dir), arrays, metadata={"provenance": json.dumps({"sources": {rel: sha}})})


def _convert_subject(model_dir: Path, card: Any, subject: int, rels: list[str], k: int, sources: dict[str, str]) -> None:
    weights_path, meta_path = (model_dir / r for r in rels)
    weights, sources[rels[0]] = load_legacy_npy(weights_path)
    meta, sources[rels[1]] = load_legacy_npy(meta_path)
    fmri = _field(meta, "fmri", meta_path)
    space = VoxelSpace(_field(fmri, "sub_mask", meta_path), str(meta_path))
    n_voxels = space.n_voxels
    expected = card.n_voxels.get(subject)
    if expected is not None and n_voxels != expected:
        raise ModelFormatError(f"{meta_path}: sub_mask holds {n_voxels} voxels, the card says {expected}")
    coef = np.asarray(_field(weights, "coef_", weights_path))
    intercept = np.asarray(_field(weights, "intercept_", weights_path)).reshape(-1)
    if coef.shape != (n_voxels, k) or intercept.shape != (n_voxels,):
        raise ModelFormatError(f"{weights_path}: coef_ {coef.shape} and intercept_ {intercept.shape} do not match "
                               f"({n_voxels}, {k}) and ({n_voxels},)")
    stored_rois = _field(fmri, "rois", meta_path)
    names = list(card.rois) + sorted(set(stored_rois) - set(card.rois))
    arrays = {"voxel_ijk": np.argwhere(space.mask).astype(np.int32), "row_voxel": np.arange(n_voxels, dtype=np.int64)}
    for name in names:
        arrays[f"roi.{name}"] = roi_rows(name, _field(stored_rois, name, meta_path), space, meta_path)
    if fmri.get("group_mask") is not None:
        arrays["group_mask_ijk"] = np.argwhere(np.asarray(fmri["group_mask"]) != 0).astype(np.int32)
    accuracy, units = accuracy_arrays(_field(meta, "encoding_models", meta_path), list(card.accuracy),
                                      n_voxels, meta_path)
    arrays.update(accuracy)
    info = {
        "model_id": card.model_id, "subject": subject, "n_voxels": n_voxels, "n_rows": n_voxels,
        "volume_shape": list(space.shape), "affine": volume_affine(fmri, "sub_mask", str(meta_path)),
        "group_affine": volume_affine(fmri, "group_mask", str(meta_path)), "space": card.space.as_dict(),
        "rois": names, "accuracy": units,
        "provenance": {"converted_from": "BERG legacy files", "sources": sources},
    }
    # everything is read and checked: only now is anything written
    save_arrays(readout_path(model_dir, subject), {"weight": coef.astype(np.float32), "bias": intercept.astype(np.float32)})
    write_subject_metadata(model_dir, subject, SubjectMetadata(info=info, arrays=arrays))


def convert_bmd_legacy(model_dir: str | Path, card: Any, subject: int) -> None:
    """Convert BERG's scaler -> SVD -> linear regression files of one subject to native files (once).

    The shared projection ``weight.{node}`` (k, d_node) float32 is ``components[:, node columns] / scale``
    and ``bias`` (k,) is ``-components @ (mean / scale)``, built in column chunks so that only the source
    matrix is held in float64. Voxel order is C order of ``sub_mask > 0``. Skips what is already converted.

    Raises
    ------
    MissingFilesError
        A legacy file is not on disk.
    UnsafePickleError, ModelFormatError
        A legacy file is unsafe or does not match the card.
    """
    model_dir, subject = Path(model_dir), card.check_subject(subject)
    if native_complete(model_dir, card, subject):
        return
    rels = legacy_files(card, subject)
    missing = [r for r in rels if not (model_dir / r).is_file()]
    if missing:
        raise MissingFilesError(f"model {card.model_id!r}, subject {subject}: missing legacy files {missing} "
                                f"under {model_dir}")
    shared, own = rels[:-2], rels[-2:]
    if len(shared) != 1 or len(own) != 2:
        raise ModelFormatError(f"model card {card.path}: 'legacy_files' must name one shared file (the scaler and "
                               f"SVD) and two per-subject files (weights, metadata); got {rels}")
    proj = projection_path(model_dir)
    if not proj.is_file():
        _convert_projection(model_dir, card, shared[0])
    with safe_open(str(proj), framework="numpy") as f:
        sources = json.loads((f.metadata() or {}).get("provenance", "{}")).get("sources", {})
        k = f.get_slice("bias").get_shape()[0]
    _convert_subject(model_dir, card, subject, own, k, dict(sources))


class BergSvdFormat(NativeFormat):
    """BERG's files of a scaler -> truncated SVD -> linear model with one shared ``pca_weights.npy`` (the layout
    of its BOLD Moments model), fetched as they are and converted to native files on first use (:func:`convert_bmd_legacy`)."""

    name = "berg-legacy"

    def source_files(self, card: Any, subject: int) -> list[str]:
        return legacy_files(card, subject)

    def prepare(self, card: Any, berg_dir: Path, subject: int) -> None:
        convert_bmd_legacy(Path(berg_dir) / card.folder, card, subject)


class BergSubjectPairFormat(NativeFormat):
    """BERG's two pickled files per subject (weights, then metadata, named by the card's ``legacy_files``),
    converted once into native files by a subclass's :meth:`convert`."""

    def source_files(self, card: Any, subject: int) -> list[str]:
        return legacy_files(card, subject)

    def prepare(self, card: Any, berg_dir: Path, subject: int) -> None:
        """Convert the subject's files unless its native files exist.

        Raises
        ------
        MissingFilesError
            A BERG file is not on disk.
        UnsafePickleError, ModelFormatError
            A file is unsafe or does not match the card.
        """
        model_dir, subject = Path(berg_dir) / card.folder, card.check_subject(subject)
        if native_complete(model_dir, card, subject):
            return
        rels, weights_path, meta_path = subject_file_pair(model_dir, card, subject)
        self.convert(model_dir, card, subject, rels, weights_path, meta_path)

    def convert(self, model_dir: Path, card: Any, subject: int, rels: list[str], weights_path: Path,
                meta_path: Path) -> None:
        """Write the subject's native files from its two BERG files (``rels``: their names in the folder)."""
        raise NotImplementedError


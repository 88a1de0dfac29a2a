"""BERG's legacy files: a safe reader for its pickled ``.npy`` dicts, and conversion to the native format.

BERG saves Python dicts with ``np.save``: a ``.npy`` header declaring a 0-d object array, followed by a
pickle. :func:`load_legacy_npy` reads them with an unpickler that resolves only the globals numpy needs
to rebuild arrays, dtypes and scalars; every other global is refused with
:class:`~berg.errors.UnsafePickleError` before anything is called. Nothing from the file is executed.

One exception is made, because BERG's fMRI metadata files hold them: pickled NIfTI header objects
(``nibabel.nifti1.Nifti1Header`` …) load as inert :class:`OpaqueObject` records of their pickled state.
No nibabel code is imported or run for them; their state may only contain what this reader admits.

:func:`convert_bmd_legacy` turns a scaler -> truncated SVD -> linear regression model (fmri-bmd-s3d) into
berg's native files (see :mod:`berg.storage.native`) beside the originals.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format
from safetensors import safe_open

from ..errors import MissingFilesError, ModelFormatError, UnsafePickleError
from .native import (SubjectMetadata, native_paths, projection_path, readout_path, save_arrays,
                     write_subject_metadata)

log = logging.getLogger(__name__)

_NUMPY_GLOBALS = {
    "_reconstruct": np._core.multiarray._reconstruct,
    "scalar": np._core.multiarray.scalar,
    "_frombuffer": np._core.numeric._frombuffer,
}
_NUMPY_MODULES = {
    "_reconstruct": ("numpy.core.multiarray", "numpy._core.multiarray"),
    "scalar": ("numpy.core.multiarray", "numpy._core.multiarray"),
    "_frombuffer": ("numpy.core.numeric", "numpy._core.numeric"),
}
_OPAQUE_CLASSES = {
    ("nibabel.nifti1", "Nifti1Header"), ("nibabel.nifti1", "Nifti1PairHeader"),
    ("nibabel.nifti2", "Nifti2Header"), ("nibabel.nifti2", "Nifti2PairHeader"),
    ("nibabel.nifti1", "Nifti1Extensions"), ("nibabel.nifti1", "Nifti1Extension"),
}
_CHUNK_COLUMNS = 1 << 18  # columns of the SVD converted at a time: 100 x 262,144 float64 = 200 MB


class OpaqueObject(list):
    """An inert stand-in for an admitted foreign object (a NIfTI header): its class name and pickled state."""

    class_name = ""
    state: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "OpaqueObject":
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _encode_latin1(text: str, encoding: str = "utf-8") -> bytes:
    """The one use protocol-2 pickles make of ``_codecs.encode``: bytes written as latin-1 text."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES.get(name, ()):
            return _NUMPY_GLOBALS[name]
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            return _encode_latin1
        if (module, name) in _OPAQUE_CLASSES:
            return type(name, (OpaqueObject,), {"class_name": f"{module}.{name}"})
        raise UnsafePickleError(
            f"refused to load {self._path}: its pickle asks for the global {module}.{name}; only numpy arrays, "
            "dtypes, scalars and plain containers (dict, list, tuple, str, bytes, numbers, None) are admitted"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused to load {self._path}: its pickle uses persistent ids")


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
                value = _RestrictedUnpickler(fh, path).load()
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
    files = card.data.get("legacy_files", {})
    return list(files.get("shared", [])) + [f.replace("{SS}", f"{int(subject):02d}") for f in files.get("subject", [])]


def native_complete(model_dir: str | Path, card: Any, subject: int | str) -> bool:
    """True when every native file the subject needs exists."""
    return all(p.is_file() for p in native_paths(Path(model_dir), subject, card.has_projection))


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


def _node_sizes(card: Any) -> list[tuple[str, int]]:
    shapes = card.data["backbone"].get("feature_shapes", {})
    nodes = card.data["backbone"]["return_nodes"]
    missing = [n for n in nodes if n not in shapes]
    if missing:
        raise ModelFormatError(f"model card {card.path}: 'backbone.feature_shapes' lacks {missing}")
    return [(n, int(np.prod(shapes[n]))) for n in nodes]


def _convert_projection(model_dir: Path, card: Any, rel: str) -> None:
    """Fold the standard scaler into the SVD components, per return node, and save them as float32."""
    src = model_dir / rel
    legacy, sha = load_legacy_npy(src)
    scaler, svd = _field(legacy, "scaler_param", src), _field(legacy, "pca_param", src)
    comps = np.asarray(_field(svd, "components_", src))
    sizes = _node_sizes(card)
    width = sum(d for _, d in sizes)
    if comps.ndim != 2 or comps.shape[1] != width:
        raise ModelFormatError(f"{src}: pca_param.components_ has shape {comps.shape}, the card expects (k, {width})")
    k = comps.shape[0]
    if k != card.data["readout"].get("n_components", k):
        log.warning("%s holds %d components, the card says %d", src, k, card.data["readout"]["n_components"])
    mean = _float_vector(scaler.get("mean_"), width, 0.0, "scaler_param.mean_", src)
    scale = _float_vector(scaler.get("scale_"), width, 1.0, "scaler_param.scale_", src)
    if (scale == 0).any():
        raise ModelFormatError(f"{src}: scaler_param.scale_ holds zeros")
    arrays, bias, offset = {}, np.zeros(k), 0
    for node, d in sizes:
        out = np.empty((k, d), dtype=np.float32)
        for start in range(0, d, _CHUNK_COLUMNS):
            cols = slice(offset + start, offset + min(d, start + _CHUNK_COLUMNS))
            block = comps[:, cols] / scale[cols]
            out[:, start:start + block.shape[1]] = block
            bias -= block @ mean[cols]
        arrays[f"weight.{node}"] = out
        offset += d
    arrays["bias"] = bias.astype(np.float32)
    del legacy, comps, svd
    save_arrays(projection_path(model_dir), arrays, metadata={"provenance": json.dumps({"sources": {rel: sha}})})


def _roi_rows(name: str, value: Any, sub_mask: np.ndarray, n_voxels: int, path: Path) -> np.ndarray:
    """Voxel indices of an ROI: BERG stores a 1-tuple (``np.where`` output), an array, or volume coordinates."""
    if isinstance(value, tuple) and len(value) == 3 and sub_mask.ndim == 3:
        index = np.full(sub_mask.shape, -1, dtype=np.int64)
        index[sub_mask] = np.arange(n_voxels)
        rows = index[tuple(np.asarray(v, dtype=np.int64) for v in value)]
    else:
        rows = np.asarray(value[0] if isinstance(value, tuple) and len(value) == 1 else value).reshape(-1)
        rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n_voxels):
        raise ModelFormatError(f"{path}: ROI {name!r} holds voxel indices outside 0..{n_voxels - 1}")
    return rows


_ACCURACY_UNITS = {
    "noiseceiling": "fraction of variance (BERG stores percent; divided by 100)",
    "correlation": "Pearson r on the test set (negative values set to 0)",
    "r2": "squared Pearson r (fraction)",
    "explained_variance": ("fraction of the noise ceiling: r2 / noiseceiling_task_test_n_10, capped at 1, 0 where "
                           "the noise ceiling is 0 (recomputed: BERG stores this fraction labelled as percent, "
                           "capped at 100)"),
}


def _accuracy(stored: Any, names: list[str], n_voxels: int, path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays, units = {}, {}
    for name in names:
        if name == "explained_variance":
            continue
        arr = np.asarray(_field(stored, name, path), dtype=np.float64).reshape(-1)
        if arr.shape != (n_voxels,):
            raise ModelFormatError(f"{path}: encoding_models.{name} has {arr.size} values, expected {n_voxels}")
        kind = "noiseceiling" if name.startswith("noiseceiling") else name
        arrays[name] = arr / 100.0 if kind == "noiseceiling" else arr
        units[name] = _ACCURACY_UNITS.get(kind, "as stored by BERG")
    if "explained_variance" in names:
        nc, r2 = arrays.get("noiseceiling_task_test_n_10"), arrays.get("r2")
        if nc is None or r2 is None:
            raise ModelFormatError(f"{path}: explained_variance needs r2 and noiseceiling_task_test_n_10")
        safe = np.where(nc > 0, nc, 1.0)
        arrays["explained_variance"] = np.where(nc > 0, np.minimum(r2 / safe, 1.0), 0.0)
        units["explained_variance"] = _ACCURACY_UNITS["explained_variance"]
    return {f"accuracy.{k}": v.astype(np.float32) for k, v in arrays.items()}, units


def _affine(fmri: dict) -> list[list[float]] | None:
    """The volume affine: ``sub_mask_affine`` if stored, else the sform of a stored header, else None."""
    if fmri.get("sub_mask_affine") is not None:
        return np.asarray(fmri["sub_mask_affine"], dtype=np.float64).reshape(4, 4).tolist()
    header = fmri.get("sub_mask_header")
    state = header.state if isinstance(header, OpaqueObject) else None
    struct = state.get("_structarr") if isinstance(state, dict) else None
    if isinstance(struct, np.ndarray) and struct.dtype.names and "srow_x" in struct.dtype.names \
            and int(struct["sform_code"]) > 0:
        rows = [np.asarray(struct[f"srow_{a}"], dtype=np.float64).reshape(4) for a in "xyz"]
        return np.vstack(rows + [np.array([0.0, 0.0, 0.0, 1.0])]).tolist()
    return None


def _convert_subject(model_dir: Path, card: Any, subject: int, rels: list[str], k: int, sources: dict[str, str]) -> None:
    weights_path, meta_path = (model_dir / r for r in rels)
    weights, sources[rels[0]] = load_legacy_npy(weights_path)
    meta, sources[rels[1]] = load_legacy_npy(meta_path)
    fmri = _field(meta, "fmri", meta_path)
    sub_mask = np.asarray(_field(fmri, "sub_mask", meta_path)) > 0
    n_voxels = int(sub_mask.sum())
    expected = card.data.get("n_voxels", {}).get(subject)
    if expected is not None and n_voxels != expected:
        raise ModelFormatError(f"{meta_path}: sub_mask holds {n_voxels} voxels, the card says {expected}")
    coef = np.asarray(_field(weights, "coef_", weights_path))
    intercept = np.asarray(_field(weights, "intercept_", weights_path)).reshape(-1)
    if coef.shape != (n_voxels, k) or intercept.shape != (n_voxels,):
        raise ModelFormatError(f"{weights_path}: coef_ {coef.shape} and intercept_ {intercept.shape} do not match "
                               f"({n_voxels}, {k}) and ({n_voxels},)")
    stored_rois = _field(fmri, "rois", meta_path)
    names = list(card.data["rois"]) + sorted(set(stored_rois) - set(card.data["rois"]))
    arrays = {"voxel_ijk": np.argwhere(sub_mask).astype(np.int32), "row_voxel": np.arange(n_voxels, dtype=np.int64)}
    for name in names:
        arrays[f"roi.{name}"] = _roi_rows(name, _field(stored_rois, name, meta_path), sub_mask, n_voxels, meta_path)
    if fmri.get("group_mask") is not None:
        arrays["group_mask_ijk"] = np.argwhere(np.asarray(fmri["group_mask"]) > 0).astype(np.int32)
    accuracy, units = _accuracy(_field(meta, "encoding_models", meta_path), card.data.get("accuracy", []),
                                n_voxels, meta_path)
    arrays.update(accuracy)
    save_arrays(readout_path(model_dir, subject), {"weight": coef.astype(np.float32), "bias": intercept.astype(np.float32)})
    space = card.data["space"]
    info = {
        "model_id": card.model_id, "subject": subject, "n_voxels": n_voxels, "n_rows": n_voxels,
        "volume_shape": list(sub_mask.shape), "affine": _affine(fmri), "space": space.get("template", space["kind"]),
        "rois": names, "accuracy": units,
        "provenance": {"converted_from": "BERG legacy files", "sources": sources},
    }
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

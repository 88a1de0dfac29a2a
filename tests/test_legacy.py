"""BERG's legacy pickles: safe reading, and conversion to the native format."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle

import nibabel as nib
import numpy as np
import pytest
from numpy.lib import format as npy_format

from berg.errors import ModelFormatError, UnsafePickleError
from berg.storage.legacy import convert_bmd_legacy, load_legacy_npy
from berg.storage.safe_pickle import PickledRecord
from berg.storage.native import load_arrays, projection_path, read_subject_metadata, readout_path
from _berg_producer import roi_columns, save_pickled, write_berg_tree
from _support import tiny_card


def _write_object_npy(path, obj, protocol):
    """An ``.npy`` file holding ``obj`` pickled with ``protocol`` (what np.save writes, any protocol)."""
    arr = np.empty((), dtype=object)
    arr[()] = obj
    with open(path, "wb") as fh:
        npy_format.write_array_header_1_0(fh, npy_format.header_data_from_array_1_0(arr))
        pickle.dump(arr, fh, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_reads_arrays_scalars_and_containers_with_every_protocol(tmp_path, protocol):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "f": np.asfortranarray(np.eye(3)[:, :2]),
           "n": np.int64(7), "t": (np.array([3, 1]),), "l": [1.5, "x", None, b"raw", True], "m": np.ones((2, 2), bool)}
    path = tmp_path / "d.npy"
    _write_object_npy(path, obj, protocol)
    value, sha = load_legacy_npy(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    for key in ("a", "f", "m"):
        np.testing.assert_array_equal(value[key], obj[key])
        assert value[key].dtype == obj[key].dtype
    assert value["n"] == 7 and isinstance(value["n"], np.int64)
    np.testing.assert_array_equal(value["t"][0], [3, 1])
    assert value["l"] == [1.5, "x", None, b"raw", True]


def test_reads_plain_arrays_without_pickle(tmp_path):
    arr = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "a.npy", np.asfortranarray(arr))
    np.testing.assert_array_equal(load_legacy_npy(tmp_path / "a.npy")[0], arr)


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _WritesFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('x')",)


@pytest.mark.parametrize("payload", [_RunsShell, _WritesFile])
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "side_effect"
    path = tmp_path / "metadata_sub-01.npy"
    save_pickled(path, {"fmri": {"rois": [np.arange(3), payload(marker)]}})
    with pytest.raises(UnsafePickleError) as info:
        load_legacy_npy(path)
    message = str(info.value)
    assert str(path) in message and ("system" in message or "exec" in message)
    assert not marker.exists()


def test_refuses_other_numpy_and_builtin_globals(tmp_path):
    for module, name in [("numpy", "load"), ("builtins", "getattr"), ("numpy.testing", "assert_equal")]:
        buf = io.BytesIO()
        arr = np.empty((), dtype=object)
        npy_format.write_array_header_1_0(buf, npy_format.header_data_from_array_1_0(arr))
        buf.write(b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R.")
        (tmp_path / "x.npy").write_bytes(buf.getvalue())
        with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
            load_legacy_npy(tmp_path / "x.npy")


def test_truncated_pickle_is_a_format_error(tmp_path):
    save_pickled(tmp_path / "d.npy", {"a": np.arange(1000.0)})
    data = (tmp_path / "d.npy").read_bytes()
    (tmp_path / "d.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="d.npy"):
        load_legacy_npy(tmp_path / "d.npy")


def test_nifti_header_loads_as_inert_record(tmp_path):
    header = nib.Nifti1Header()
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    header.set_sform(affine, code=4)
    save_pickled(tmp_path / "m.npy", {"h": header})
    value, _ = load_legacy_npy(tmp_path / "m.npy")
    assert isinstance(value["h"], PickledRecord) and value["h"].class_name == "nibabel.nifti1.Nifti1Header"
    np.testing.assert_array_equal(value["h"].state["_structarr"]["srow_x"], affine[0])


@pytest.fixture()
def converted(tmp_path):
    card = tiny_card()
    files = write_berg_tree(tmp_path, card, [1], tmp_path / "bmd")
    convert_bmd_legacy(tmp_path, card, 1)
    return card, tmp_path, files


def test_projection_matches_the_float64_scaler_svd_chain(converted):
    card, model_dir, files = converted
    legacy = files["encoding_models_weights/pca_weights.npy"]
    proj = load_arrays(projection_path(model_dir))
    rng = np.random.default_rng(1)
    shapes = card.data["backbone"]["feature_shapes"]
    feats = {n: rng.normal(0, 1, (4, *shapes[n])) for n in card.data["backbone"]["return_nodes"]}
    flat = np.concatenate([f.reshape(4, -1) for f in feats.values()], axis=1)
    sc = legacy["scaler_param"]
    expected = ((flat - sc["mean_"]) / sc["scale_"]) @ legacy["pca_param"]["components_"].T
    got = sum(f.reshape(4, -1).astype(np.float32) @ proj[f"weight.{n}"].T for n, f in feats.items()) + proj["bias"]
    assert all(v.dtype == np.float32 for v in proj.values())
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-5
    readout = load_arrays(readout_path(model_dir, 1))
    weights = files["encoding_models_weights/weights_sub-01.npy"]
    y = expected @ weights["coef_"].T + weights["intercept_"]
    y_native = got @ readout["weight"].T + readout["bias"]
    assert np.abs(y_native - y).max() / np.abs(y).max() <= 1e-5


def test_metadata_voxels_rois_and_accuracy(converted):
    card, model_dir, files = converted
    stored = files["metadata/metadata_sub-01.npy"]
    meta = read_subject_metadata(model_dir, 1)
    sub_mask = stored["fmri"]["sub_mask"]
    assert meta.n_voxels == card.data["n_voxels"][1]
    np.testing.assert_array_equal(meta.voxel_ijk, np.argwhere(sub_mask))
    assert meta.info["affine"] == stored["fmri"]["sub_mask_affine"].tolist()
    assert meta.info["group_affine"] == stored["fmri"]["group_mask_affine"].tolist()
    assert meta.info["volume_shape"] == list(sub_mask.shape)
    assert meta.roi_names == card.data["rois"]
    for name in card.data["rois"]:
        np.testing.assert_array_equal(meta.roi_rows(name), roi_columns(files, 1, name))
    np.testing.assert_array_equal(meta.arrays["group_mask_ijk"], np.argwhere(stored["fmri"]["group_mask"]))
    acc, enc = meta.accuracy(), stored["encoding_models"]
    nc = enc["noiseceiling_task_test_n_10"] / 100
    np.testing.assert_allclose(acc["noiseceiling_task_test_n_10"], nc, rtol=1e-6)
    np.testing.assert_allclose(acc["correlation"], enc["correlation"], rtol=1e-6)
    expected_ev = np.where(nc > 0, np.minimum(enc["r2"] / np.where(nc > 0, nc, 1), 1), 0)
    np.testing.assert_allclose(acc["explained_variance"], expected_ev, rtol=1e-6)
    assert acc["explained_variance"].max() <= 1 and (acc["explained_variance"][:3] == 0).all()
    assert "fraction" in meta.info["accuracy"]["explained_variance"]
    sources = meta.info["provenance"]["sources"]
    for rel in files:
        assert sources[rel] == hashlib.sha256((model_dir / rel).read_bytes()).hexdigest()


def test_second_conversion_is_skipped(converted):
    card, model_dir, _ = converted
    json_path = model_dir / "metadata" / "berg_metadata_sub-01.json"
    before = json_path.stat().st_mtime_ns, projection_path(model_dir).stat().st_mtime_ns
    (model_dir / "encoding_models_weights" / "pca_weights.npy").unlink()  # not needed any more
    convert_bmd_legacy(model_dir, card, 1)
    assert (json_path.stat().st_mtime_ns, projection_path(model_dir).stat().st_mtime_ns) == before


def test_voxel_count_mismatch_writes_no_subject_files(tmp_path):
    card = tiny_card()
    write_berg_tree(tmp_path, card, [1], tmp_path / "bmd")
    data = card.to_dict()
    data["n_voxels"][1] += 1
    from berg.cards import validate_card
    with pytest.raises(ModelFormatError, match="voxels"):
        convert_bmd_legacy(tmp_path, validate_card(data, "<card>"), 1)
    assert not readout_path(tmp_path, 1).exists()
    assert not (tmp_path / "metadata" / "berg_metadata_sub-01.json").exists()


def test_affine_from_header_when_no_affine_is_stored(tmp_path):
    card = tiny_card()
    files = write_berg_tree(tmp_path, card, [1], tmp_path / "bmd")
    meta = files["metadata/metadata_sub-01.npy"]
    affine = meta["fmri"].pop("sub_mask_affine")
    header = nib.Nifti1Header()
    header.set_sform(affine, code=4)
    meta["fmri"]["sub_mask_header"] = header
    save_pickled(tmp_path / "metadata/metadata_sub-01.npy", meta)
    convert_bmd_legacy(tmp_path, card, 1)
    info = json.loads((tmp_path / "metadata" / "berg_metadata_sub-01.json").read_text())
    np.testing.assert_allclose(info["affine"], affine)

"""Damaged model files are typed errors at load, naming the file: native files of a toy volume model, and BERG's
legacy metadata as its creation code would have written it wrongly."""

import json
import shutil

import numpy as np
import pytest
from _berg_producer import save_pickled, write_berg_tree
from _support import tiny_card, write_space_model

import berg
from berg.errors import ModelFormatError
from berg.storage.legacy import convert_bmd_legacy
from berg.storage.native import load_arrays, metadata_paths, readout_path, save_arrays

MODEL_DIR = "encoding_models/modality-fmri/train_dataset-toy/model-volume"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "berg_dir"
    write_space_model(root, "volume")
    return root


def _edit_info(**changes):
    def edit(model_dir):
        path = metadata_paths(model_dir, 1)[0]
        info = json.loads(path.read_text())
        for key, value in changes.items():
            if value is None:
                info.pop(key)
            else:
                info[key] = value
        path.write_text(json.dumps(info))
    return edit


def _edit_arrays(path_of, change):
    def edit(model_dir):
        path = path_of(model_dir)
        arrays = load_arrays(path)
        change(arrays)
        save_arrays(path, arrays)
    return edit


def _readout(change):
    return _edit_arrays(lambda d: readout_path(d, 1), change)


def _metadata_arrays(change):
    return _edit_arrays(lambda d: metadata_paths(d, 1)[1], change)


@pytest.mark.parametrize("damage, file, words", [
    (_readout(lambda a: a.update(weight=a["weight"][:, :100])), "berg_readout_sub-01", "do not match"),
    (_readout(lambda a: a.pop("bias")), "berg_readout_sub-01", "bias"),
    (_readout(lambda a: a["weight"].__setitem__((0, 0), np.nan)), "berg_readout_sub-01", "NaN|finite"),
    (lambda d: readout_path(d, 1).write_bytes(b"not safetensors"), "berg_readout_sub-01", "cannot read"),
    (_metadata_arrays(lambda a: a.update({"roi.A": np.array([0, 99])})), "berg_metadata_sub-01", "roi|ROI"),
    (_metadata_arrays(lambda a: a.update({"roi.A": np.array([-1, 2])})), "berg_metadata_sub-01", "roi|ROI"),
    (_metadata_arrays(lambda a: a.update(voxel_ijk=a["voxel_ijk"] + 50)), "berg_metadata_sub-01", "outside"),
    (_edit_info(n_voxels=None), "berg_metadata_sub-01", "n_voxels"),
    (_edit_info(affine=None), "berg_metadata_sub-01", "affine"),
    (_edit_info(volume_shape=None), "berg_metadata_sub-01", "volume_shape"),
    (_edit_info(affine=np.eye(3).tolist()), "berg_metadata_sub-01", r"affine.*\(3, 3\)"),
    (lambda d: metadata_paths(d, 1)[0].write_text("{not json"), "berg_metadata_sub-01", "cannot read"),
])
def test_damaged_native_files_are_format_errors_at_load(pristine, tmp_path, damage, file, words):
    root = tmp_path / "berg_dir"
    shutil.copytree(pristine, root)
    damage(root / MODEL_DIR)
    with pytest.raises(ModelFormatError, match=words) as caught:
        berg.get_encoding_model("toy-volume", subject=1, device="cpu", backbone_weights=None, berg_dir=root)
    assert file in str(caught.value)


@pytest.mark.parametrize("field, value, words", [
    ("sub_mask_affine", np.eye(3), r"sub_mask_affine' has shape \(3, 3\)"),
    ("sub_mask", np.ones((4, 5), bool), r"sub_mask' has shape \(4, 5\)"),
])
def test_damaged_legacy_metadata_is_a_format_error(tmp_path, field, value, words):
    card = tiny_card()
    files = write_berg_tree(tmp_path, card, [1], tmp_path / "bmd")
    meta = files["metadata/metadata_sub-01.npy"]
    meta["fmri"][field] = value
    save_pickled(tmp_path / "metadata/metadata_sub-01.npy", meta)
    with pytest.raises(ModelFormatError, match=words) as caught:
        convert_bmd_legacy(tmp_path, card, 1)
    assert "metadata_sub-01.npy" in str(caught.value)
    assert not readout_path(tmp_path, 1).exists()

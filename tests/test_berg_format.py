"""BERG's files as BERG's creation code writes them: memmap masks, ROI triples holding nibabel images, every ROI
form, crafted pickles, and BERG's metadata view through the public API."""

from __future__ import annotations

import os
import pickle

import nibabel as nib
import numpy as np
import pytest
import yaml
from numpy.lib import format as npy_format

import berg
from berg.errors import InvalidSelectionError, InvalidSubjectError, ModelFormatError, UnsafePickleError
from berg.storage.legacy import convert_bmd_legacy, load_legacy_npy
from berg.storage.native import read_subject_metadata
from berg.storage.safe_pickle import PickledRecord
from _berg_producer import ROI_FORMS, reference_responses, roi_columns, save_pickled, write_berg_tree
from _support import packaged_card_data, tiny_card


class _GlobalRecorder(pickle.Unpickler):
    """Lists the globals a pickle names; each loads as an inert record, so nothing runs."""

    def __init__(self, file):
        super().__init__(file)
        self.names = set()

    def find_class(self, module, name):
        self.names.add(f"{module}.{name}")
        return type(name, (PickledRecord,), {})


def _globals_named(path) -> set[str]:
    """Every global the pickle inside an ``.npy`` file names, as ``module.name``."""
    with open(path, "rb") as fh:
        version = npy_format.read_magic(fh)
        (npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0)(fh)
        recorder = _GlobalRecorder(fh)
        recorder.load()
    return recorder.names


@pytest.fixture()
def tree(tmp_path):
    card = tiny_card()
    files = write_berg_tree(tmp_path / "model", card, [1, 2], tmp_path / "bmd")
    return card, tmp_path / "model", files


def test_the_tree_holds_what_bergs_creation_code_writes(tree):
    card, model_dir, files = tree
    fmri = files["metadata/metadata_sub-01.npy"]["fmri"]
    assert type(fmri["sub_mask"]) is np.memmap and type(fmri["group_mask"]) is np.memmap
    assert isinstance(fmri["rois"]["lV1v"][2], nib.Nifti1Image)
    named = _globals_named(model_dir / "metadata/metadata_sub-01.npy")
    for name in ("numpy.memmap", "nibabel.nifti1.Nifti1Image", "nibabel.arrayproxy.ArrayProxy",
                 "nibabel.fileholders.FileHolder", "nibabel.nifti1.Nifti1Header", "nibabel.nifti1.Nifti1Extensions"):
        assert name in named, name


def test_memmap_masks_and_nibabel_images_load_inert(tree, monkeypatch):
    card, model_dir, files = tree
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    value, _ = load_legacy_npy(model_dir / "metadata/metadata_sub-01.npy")
    assert opened == [str(model_dir / "metadata/metadata_sub-01.npy")]  # no mask or ROI file named inside
    fmri = value["fmri"]
    assert type(fmri["sub_mask"]) is np.ndarray
    np.testing.assert_array_equal(fmri["sub_mask"], files["metadata/metadata_sub-01.npy"]["fmri"]["sub_mask"])
    image = fmri["rois"]["rFFA"][2]
    assert isinstance(image, PickledRecord) and image.class_name == "nibabel.nifti1.Nifti1Image"
    proxy = image.field("_dataobj")
    assert proxy.class_name == "nibabel.arrayproxy.ArrayProxy" and tuple(proxy.field("_shape")) == (6, 7, 5)


@pytest.mark.parametrize("form", ROI_FORMS)
def test_every_roi_form_selects_the_same_columns(tmp_path, form):
    card = tiny_card()
    triple = write_berg_tree(tmp_path / "a", card, [1], tmp_path / "bmd_a", roi_form="triple")
    write_berg_tree(tmp_path / "b", card, [1], tmp_path / "bmd_b", roi_form=form)
    convert_bmd_legacy(tmp_path / "b", card, 1)
    meta = read_subject_metadata(tmp_path / "b", 1)
    for name in card.data["rois"]:
        want = roi_columns(triple, 1, name)
        assert want.size >= 4
        np.testing.assert_array_equal(np.sort(meta.roi_rows(name)), want)


def _rewrite_roi(model_dir, name, edit):
    path = model_dir / "metadata/metadata_sub-01.npy"
    meta = np.load(path, allow_pickle=True).item()  # the test's own trusted file
    meta["fmri"]["rois"][name] = edit(meta["fmri"]["rois"][name], meta["fmri"]["sub_mask"])
    meta["fmri"]["extra_key_from_a_newer_berg"] = {"anything": np.arange(3)}
    save_pickled(path, meta)


def _outside(mask):
    return np.flatnonzero(~np.asarray(mask))[:2]


@pytest.mark.parametrize("edit, phrase", [
    (lambda e, m: (e[0], e[1] + 1, e[2]), "disagree"),
    (lambda e, m: (tuple(np.append(a, b) for a, b in zip(e[0], np.unravel_index(_outside(m)[:1], m.shape))),
                   e[1], e[2]), "outside sub_mask"),
    (lambda e, m: (e[0], e[1], nib.Nifti1Image(np.zeros((3, 3, 3)), np.eye(4))), "shape"),
    (lambda e, m: (e[0], e[1], nib.Nifti1Image(np.asarray(m, dtype=np.float32), np.eye(4))), "other voxels"),
    (lambda e, m: _outside(m) + 10_000, "outside both"),
    (lambda e, m: np.array([0.5, 1.5]), "integer"),
])
def test_contradicting_roi_entries_name_the_roi_and_file(tree, edit, phrase):
    card, model_dir, _ = tree
    _rewrite_roi(model_dir, "rFFA", edit)
    with pytest.raises(ModelFormatError) as info:
        convert_bmd_legacy(model_dir, card, 1)
    message = str(info.value)
    assert "'rFFA'" in message and "metadata_sub-01.npy" in message and phrase in message


def test_extra_metadata_keys_are_ignored(tree):
    card, model_dir, files = tree
    _rewrite_roi(model_dir, "lV1v", lambda e, m: e)
    convert_bmd_legacy(model_dir, card, 1)
    np.testing.assert_array_equal(read_subject_metadata(model_dir, 1).roi_rows("lV1v"), roi_columns(files, 1, "lV1v"))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _MemmapWithPayload(np.ndarray):
    """Pickles as numpy.memmap whose array state carries a payload."""

    marker = None

    def __reduce__(self):
        fn, args, state = np.asarray(self).__reduce__()
        return fn, (np.memmap, *args[1:]), (*state[:-1], [_Payload(self.marker)])


def _image_with_payload(marker, tmp_path):
    image = nib.Nifti1Image(np.ones((2, 2, 2)), np.eye(4))
    nib.save(image, tmp_path / "r.nii")
    image = nib.load(tmp_path / "r.nii")
    image.extra = {"hidden": _Payload(marker)}
    return image


@pytest.mark.parametrize("where", ["nibabel state", "memmap state", "roi tuple"])
def test_code_hidden_in_admitted_objects_is_refused_and_never_runs(tmp_path, where):
    marker = tmp_path / "ran"
    if where == "nibabel state":
        entry = (np.where(np.ones((2, 2, 2))), np.arange(8), _image_with_payload(marker, tmp_path))
    elif where == "memmap state":
        arr = np.ones(4).view(_MemmapWithPayload)
        arr.marker = marker
        entry = arr
    else:
        entry = (np.arange(3), _Payload(marker))
    path = tmp_path / "metadata_sub-01.npy"
    save_pickled(path, {"fmri": {"rois": {"lFFA": entry}}})
    assert {"posix.system", "os.system"} & _globals_named(path)
    with pytest.raises(UnsafePickleError, match="system"):
        load_legacy_npy(path)
    assert not marker.exists()


def test_one_admitted_list_serves_both_legacy_readers():
    from berg.storage import img2fmri, legacy, safe_pickle

    assert img2fmri.restricted_load is legacy.restricted_load is safe_pickle.restricted_load
    assert not hasattr(img2fmri, "_RidgeUnpickler") and not hasattr(legacy, "_RestrictedUnpickler")


# -- the public API on a berg_dir holding BERG's files ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_berg_dir(tmp_path_factory):
    """A berg_dir with the tiny card and BERG's files for subjects 1 and 2 (offline)."""
    root = tmp_path_factory.mktemp("berg_dir")
    card = tiny_card()
    data = card.to_dict()
    (root / "model_cards").mkdir()
    (root / "model_cards" / "fmri-bmd-tiny.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    files = write_berg_tree(root / card.folder, card, [1, 2], tmp_path_factory.mktemp("bmd"))
    return root, card, files


def test_get_model_metadata_gives_bergs_structure_and_values(tiny_berg_dir, monkeypatch):
    monkeypatch.setenv("BERG_OFFLINE", "1")
    root, card, files = tiny_berg_dir
    meta = berg.get_model_metadata("fmri-bmd-tiny", subject=2, berg_dir=root)
    stored = files["metadata/metadata_sub-02.npy"]
    np.testing.assert_array_equal(meta["fmri"]["sub_mask"], stored["fmri"]["sub_mask"])
    np.testing.assert_array_equal(meta["fmri"]["group_mask"], stored["fmri"]["group_mask"])
    np.testing.assert_array_equal(meta["fmri"]["sub_mask_affine"], stored["fmri"]["sub_mask_affine"])
    np.testing.assert_array_equal(meta["fmri"]["group_mask_affine"], stored["fmri"]["group_mask_affine"])
    for name in card.data["rois"]:
        np.testing.assert_array_equal(meta["fmri"]["rois"][name], roi_columns(files, 2, name))
    assert set(meta["encoding_models"]) == set(stored["encoding_models"])
    for name, value in stored["encoding_models"].items():
        np.testing.assert_allclose(meta["encoding_models"][name], value, rtol=1e-6, atol=1e-9, err_msg=name)
    nc = stored["encoding_models"]["noiseceiling_task_test_n_10"]
    np.testing.assert_allclose(meta["accuracy"]["noiseceiling_task_test_n_10"], nc / 100, rtol=1e-6)
    assert meta["accuracy"]["explained_variance"].max() <= 1.0


def test_encode_with_return_metadata_gives_a_copy(tiny_berg_dir, monkeypatch):
    monkeypatch.setenv("BERG_OFFLINE", "1")
    root, card, files = tiny_berg_dir
    model = berg.BERG(root).get_encoding_model("fmri-bmd-tiny", subject=1, selection={"roi": "rFFA"},
                                               device="cpu", backbone_weights=None)
    assert model.n_outputs == roi_columns(files, 1, "rFFA").size
    np.testing.assert_array_equal(model.metadata["fmri"]["rois"]["rFFA"], roi_columns(files, 1, "rFFA"))


@pytest.mark.parametrize("kwargs, error, phrase", [
    ({"subject": 3}, InvalidSubjectError, "valid subjects are 1, 2"),
    ({"subject": 1, "selection": {"roi": "rFFAA"}}, InvalidSelectionError, "Did you mean: rFFA"),
    ({"subject": 1, "selection": {"region": "rFFA"}}, InvalidSelectionError, "unknown key"),
    ({"subject": 1, "selection": {"voxels": np.ones(36)}}, InvalidSelectionError, "length 37"),
])
def test_bad_requests_fail_before_any_file_is_touched(tmp_path, monkeypatch, kwargs, error, phrase):
    monkeypatch.setenv("BERG_OFFLINE", "1")
    root = tmp_path / "berg_dir"
    (root / "model_cards").mkdir(parents=True)
    (root / "model_cards" / "fmri-bmd-tiny.yaml").write_text(yaml.safe_dump(tiny_card().to_dict()))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(error, match=phrase):  # no model files at all: a file check would raise MissingFilesError
        berg.get_encoding_model("fmri-bmd-tiny", berg_dir=root, backbone_weights=None, **kwargs)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_subject_is_required_and_keyword_only():
    with pytest.raises(TypeError):
        berg.get_encoding_model("fmri-bmd-s3d")
    with pytest.raises(TypeError):
        berg.get_encoding_model("fmri-bmd-s3d", 1)
    with pytest.raises(TypeError):
        berg.BERG().get_encoding_model("fmri-bmd-s3d", 1)


@pytest.mark.slow
def test_full_width_files_through_the_public_api(tmp_path_factory, monkeypatch):
    """The packaged fmri-bmd-s3d card (4,084,096 features, subject 1's 108,219 voxels, 47 ROIs), 4 components."""
    monkeypatch.setenv("BERG_OFFLINE", "1")
    root = tmp_path_factory.mktemp("full")
    data = packaged_card_data("fmri-bmd-s3d")
    data["readout"]["n_components"] = 4
    from berg.cards import validate_card

    card = validate_card(data, "<4-component fmri-bmd-s3d>")
    files = write_berg_tree(root / card.folder, card, [1], tmp_path_factory.mktemp("bmd_full"), n_train=6, n_test=5)
    video = np.random.default_rng(0).integers(0, 256, (1, 16, 3, 96, 128), dtype=np.uint8)
    common = dict(subject=1, device="cpu", backbone_weights=None, berg_dir=root)
    whole = berg.get_encoding_model("fmri-bmd-s3d", **common)
    responses, meta = berg.encode(whole, video, return_metadata=True)
    import torch

    with torch.inference_mode():
        feats = whole.extractor.extract(torch.from_numpy(video[:, np.linspace(0, 15, 14).astype(int)]))
    flat = np.concatenate([feats[n].flatten(1).double().numpy() for n in feats], axis=1)
    assert flat.shape == (1, 4_084_096)
    want = reference_responses(files, 1, flat)
    assert responses.shape == (1, 108_219)
    assert np.abs(responses - want).max() / np.abs(want).max() <= 1e-5
    lffa = roi_columns(files, 1, "lFFA")
    union = np.concatenate([lffa, [c for c in roi_columns(files, 1, "rPPA") if c not in set(lffa)]])
    mask = np.zeros(108_219, dtype=np.int8)
    mask[::997] = 1
    for selection, columns in [({"roi": "lFFA"}, lffa), ({"roi": ["lFFA", "rPPA"]}, union),
                               ({"voxels": mask}, np.flatnonzero(mask))]:
        model = berg.get_encoding_model("fmri-bmd-s3d", selection=selection, **common)
        got = berg.encode(model, video, show_progress=False)
        assert np.abs(got - want[:, columns]).max() / np.abs(want).max() <= 1e-5, selection
    np.testing.assert_array_equal(meta["fmri"]["rois"]["lFFA"], lffa)
    assert set(meta["fmri"]["rois"]) == set(card.data["rois"]) and len(card.data["rois"]) == 47

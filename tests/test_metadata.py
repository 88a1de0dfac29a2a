"""The metadata contract for both packaged models, and the shape of the public API around EncodingModel."""

import inspect

import numpy as np
import pytest
import torch

import berg
from berg.metadata import ACCURACY_UNITS, ModelMetadata, accuracy_kind, normalise_space
from berg.storage.synthetic import write_synthetic_model


@pytest.fixture(scope="module")
def bmd_berg_dir(tmp_path_factory):
    """fmri-bmd-s3d, subject 1, with random weights (the packaged card's voxels and ROIs)."""
    root = tmp_path_factory.mktemp("bmd")
    write_synthetic_model(root, "fmri-bmd-s3d", subject=1)
    return root


@pytest.fixture(scope="module")
def subject_metadata(bmd_berg_dir, img2fmri_model_dir):
    """``get_model_metadata`` of both packaged models."""
    return {"fmri-bmd-s3d": berg.get_model_metadata("fmri-bmd-s3d", subject=1, berg_dir=bmd_berg_dir),
            "fmri-bold5000-resnet18": berg.get_model_metadata("fmri-bold5000-resnet18", subject=1,
                                                              berg_dir=img2fmri_model_dir.parents[3])}


@pytest.fixture(scope="module")
def group_model(img2fmri_model_dir):
    return berg.get_encoding_model("fmri-bold5000-resnet18", subject="group", selection={"roi": "PPA"},
                                   device="cpu", backbone_weights=None, berg_dir=img2fmri_model_dir.parents[3])


@pytest.fixture
def model(tiny_model, berg_dir):
    return berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)


def test_both_models_and_the_group_give_the_same_keys(subject_metadata, group_model):
    bmd, img2fmri = subject_metadata.values()
    group = group_model.metadata
    assert set(bmd) == set(img2fmri) == set(group)
    assert "rois" not in bmd and "stored" not in bmd
    for meta in (bmd, img2fmri, group):
        assert isinstance(meta, ModelMetadata)
        assert meta["voxel_ijk"].shape == (meta["n_voxels"], 3) and meta["voxel_index"].shape == (meta["n_voxels"],)
        assert all(cols.max() < meta["n_voxels"] for cols in meta["roi_columns"].values())
    assert bmd["n_voxels"] == 108219 and len(bmd["roi_columns"]) == 47
    assert group["subject"] == "group" and "PPA" in group["roi_columns"]


def test_space_is_one_type_for_every_model(subject_metadata, group_model):
    spaces = [meta["space"] for meta in subject_metadata.values()] + [group_model.metadata["space"]]
    assert all(type(s) is dict and set(s) == {"kind", "template"} for s in spaces)
    assert [s["kind"] for s in spaces] == ["volume", "volume", "volume"]
    # TemplateFlow identifiers from the cards: BMD's fMRIPrep grid, img2fmri's subject grids, FSL's MNI152 2 mm
    assert [s["template"] for s in spaces] == ["MNI152NLin2009cAsym", "individual", "MNI152NLin6Asym"]


@pytest.mark.parametrize("stored, card, want", [
    ("MNI152", None, {"kind": "volume", "template": "MNI152"}),  # what earlier files stored, as a bare string
    ("subject", {"kind": "volume", "template": "individual"}, {"kind": "volume", "template": "individual"}),
    ({"kind": "subject"}, None, {"kind": "volume", "template": None}),
    ({"kind": "fsaverage"}, None, {"kind": "surface", "template": "fsaverage"}),
    ({"kind": "volume", "template": "old"}, {"kind": "volume", "template": "MNI152NLin6Asym"},
     {"kind": "volume", "template": "MNI152NLin6Asym"}),  # the card's template wins over a stored one
    (None, {"kind": "sensors"}, {"kind": "sensors", "template": None}),
])
def test_normalise_space(stored, card, want):
    assert normalise_space(stored, card) == want


def test_accuracy_units_follow_the_accuracy_kind_and_alpha_is_fitting(tiny_model, berg_dir):
    values = dict(berg.get_model_metadata("test-resnet18", subject=1, berg_dir=berg_dir))
    values.pop("accuracy_units")
    ridge_alpha = np.array([0.5, 2.0])
    meta = ModelMetadata.build(**{**values, "accuracy": {"alpha": ridge_alpha, "noiseceiling_task_test_n_10":
                                                         np.full(60, 0.25), "r2": np.zeros(60)}})
    assert set(meta.accuracy) == set(meta.accuracy_units) == {"noiseceiling_task_test_n_10", "r2"}
    assert meta.accuracy_units["noiseceiling_task_test_n_10"] == ACCURACY_UNITS["noise_ceiling"]
    assert meta.accuracy["r2"].dtype == np.float32
    np.testing.assert_array_equal(meta.fitting["alpha"], ridge_alpha)
    assert accuracy_kind("noise_ceiling") == accuracy_kind("noiseceiling_task_train_n_1") == "noise_ceiling"


def test_callers_get_a_copy(model, images):
    _, first = berg.encode(model, images[:1], return_metadata=True, show_progress=False)
    first["voxel_ijk"][:] = -1
    first["roi_columns"].clear()
    first["fmri"]["sub_mask"][:] = False
    model.metadata["accuracy"]["correlation"][:] = 7.0
    _, second = berg.encode(model, images[:1], return_metadata=True, show_progress=False)
    assert second["voxel_ijk"].min() >= 0 and set(second["roi_columns"]) == {"lA", "rA", "B"}
    assert second["fmri"]["sub_mask"].sum() == 60 and not (second["accuracy"]["correlation"] == 7.0).any()
    with pytest.raises(AttributeError):
        second.model_id = "other"  # the contract itself is frozen


def test_berg_view_is_computed_from_the_contract(subject_metadata):
    meta = subject_metadata["fmri-bmd-s3d"]
    fmri = meta["fmri"]
    assert fmri["sub_mask"].sum() == meta["n_voxels"]
    np.testing.assert_array_equal(np.argwhere(fmri["sub_mask"]), meta["voxel_ijk"])  # columns are C-order voxels
    for name, columns in meta["roi_columns"].items():
        np.testing.assert_array_equal(np.unique(fmri["rois"][name]), columns)  # whole brain: columns are voxels
    assert meta["fmri"] is not fmri  # a fresh view on every access, never a second store
    assert "fmri" in meta and "fmri" not in set(meta) and "fmri" not in meta.to_json()


def test_group_model_has_no_berg_view(group_model):
    meta = group_model.metadata
    assert "fmri" not in meta and meta.stored is None
    with pytest.raises(KeyError, match="subject models only"):
        meta["encoding_models"]


def test_to_json_holds_the_scalars(subject_metadata):
    import json

    meta = subject_metadata["fmri-bold5000-resnet18"]
    written = json.loads(json.dumps(meta.to_json()))
    assert written["space"] == meta["space"] and written["volume_shape"] == list(meta["volume_shape"])
    assert written["roi_names"] == list(meta["roi_columns"]) and "voxel_ijk" not in written


def test_written_columns_carry_the_contract(model, tmp_path):
    import json

    import h5py

    from berg.sinks import write_columns

    meta = model.metadata
    with h5py.File(tmp_path / "columns.h5", "w") as h5:
        write_columns(h5, meta)
        assert json.loads(h5.attrs["space"]) == meta["space"] == {"kind": "volume", "template": "individual"}
        np.testing.assert_array_equal(h5["voxel_ijk"][()], meta["voxel_ijk"])
        assert set(h5["roi_columns"]) == set(meta["roi_columns"])


def test_forward_and_to_agree_with_predict(model, images):
    assert isinstance(model, torch.nn.Module)
    want = model.predict(images)
    prepared = model.extractor.prepare(torch.from_numpy(images).permute(0, 3, 1, 2))
    with torch.no_grad():
        got = model(prepared)
    assert got.shape == (3, model.n_outputs) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(berg.encode(model, images, show_progress=False), want, rtol=1e-5, atol=1e-5)
    moved = model.to(torch.device("meta"))
    assert moved is model and model.device.type == "meta"
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}


@pytest.mark.parametrize("function, n_positional", [
    (berg.get_encoding_model, 1), (berg.encode, 2), (berg.predict_movie, 2), (berg.to_nifti, 2),
    (berg.get_model_metadata, 1), (berg.describe, 1), (berg.list_models, 0), (berg.get_model_catalog, 0),
    (berg.BERG.get_model_metadata, 2), (berg.BERG.predict_movie, 2),
    # BERG's own positional order, so that BERG code runs unchanged
    (berg.BERG.get_encoding_model, 4), (berg.BERG.encode, 3), (berg.BERG.get_model_catalog, 2),
])
def test_public_functions_take_keywords_after_the_first_arguments(function, n_positional):
    params = list(inspect.signature(function).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) == n_positional, [p.name for p in positional]


def test_keyword_only_is_enforced(model, images, tiny_model, berg_dir):
    with pytest.raises(TypeError):
        berg.encode(model, images, True)
    facade = berg.BERG(berg_dir)  # BERG's positional order: device and selection, then return_metadata
    same = facade.get_encoding_model("test-resnet18", "cpu", None, subject=1, backbone_weights=None)
    responses, metadata = facade.encode(same, images, True, show_progress=False)
    np.testing.assert_allclose(responses, berg.encode(model, images, show_progress=False), rtol=1e-5, atol=1e-6)
    assert metadata["model_id"] == "test-resnet18"
    with pytest.raises(TypeError):
        berg.get_model_metadata("test-resnet18", 1, berg_dir)


def test_group_smoothing_is_named_sigma_mm(tiny_model, berg_dir):
    with pytest.raises(berg.BergError, match=r"sigma_mm=2\.0 is not valid for subject=1: .*subject='group' only"):
        berg.get_encoding_model("test-resnet18", subject=1, sigma_mm=2.0, device="cpu", backbone_weights=None,
                                berg_dir=berg_dir)
    with pytest.raises(TypeError, match="sigma"):
        berg.get_encoding_model("test-resnet18", subject=1, sigma=2.0, berg_dir=berg_dir)


def test_group_metadata_without_a_model_is_the_group_models(img2fmri_model_dir, monkeypatch):
    monkeypatch.setenv("BERG_OFFLINE", "1")  # the subjects' files are there: nothing to fetch
    berg_dir = img2fmri_model_dir.parents[3]
    meta = berg.get_model_metadata("fmri-bold5000-resnet18", subject="group", berg_dir=berg_dir)
    model = berg.get_encoding_model("fmri-bold5000-resnet18", subject="group", device="cpu", backbone_weights=None,
                                    berg_dir=berg_dir)
    assert meta["n_voxels"] == model.n_outputs == 9641 and meta["backbone"] is None
    np.testing.assert_array_equal(meta["voxel_ijk"], model.metadata["voxel_ijk"])
    assert meta["space"] == {"kind": "volume", "template": "MNI152NLin6Asym"} and meta["fill_value"] == 0.0
    assert set(meta["roi_columns"]) == set(model.metadata["roi_columns"]) and meta["volume_shape"] == (91, 109, 91)

"""The img2fmri importer: exact parity with the wheel's own models, atomicity, integrity and offline errors."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import torch
import torchvision

import berg

from _support import ROIS, Wheel
from berg.errors import IntegrityError, ModelFormatError, OfflineError, UnsafePickleError
from berg.storage import img2fmri as importer
from berg.storage.native import load_arrays, read_subject_metadata, readout_path
from berg.storage.wheels import WheelSpec

CARD = importer.img2fmri_card()  # the zoo's card of the img2fmri-wheel format
WHEEL = WheelSpec.of(CARD, "the tests")

# published LH + RH voxel counts (subject x ROI)
COUNTS = {1: [(210, 285), (101, 187), (152, 190), (86, 143), (131, 200)],
          2: [(254, 241), (85, 95), (327, 561), (59, 278), (172, 198)],
          3: [(522, 696), (187, 205), (430, 597), (78, 116), (112, 161)]}


@pytest.fixture(scope="module")
def features():
    return np.random.default_rng(0).gamma(1.0, 0.5, size=(6, 512)).astype(np.float32)


@pytest.mark.parametrize("subject", [1, 2, 3])
def test_roi_rows_equal_the_wheels_ridge_predict(img2fmri_model_dir, img2fmri_wheel, features, subject):
    wheel = Wheel(img2fmri_wheel)
    meta = read_subject_metadata(img2fmri_model_dir, subject)
    readout = load_arrays(readout_path(img2fmri_model_dir, subject))
    ours = features @ readout["weight"].T + readout["bias"]
    for roi, (n_lh, n_rh) in zip(ROIS, COUNTS[subject]):
        expected = wheel.ridge(subject, roi).predict(features)
        assert np.abs(ours[:, meta.roi_rows(roi)] - expected).max() <= 1e-5
        np.testing.assert_array_equal(meta.roi_rows("LH" + roi), meta.roi_rows(roi)[:n_lh])
        np.testing.assert_array_equal(meta.roi_rows("RH" + roi), meta.roi_rows(roi)[n_lh:])
        assert meta.roi_rows(roi).size == n_lh + n_rh


@pytest.mark.parametrize("subject", [1, 3])
def test_whole_brain_equals_pairwise_nanmean_filling(img2fmri_model_dir, img2fmri_wheel, features, subject):
    volume = Wheel(img2fmri_wheel).subject_volume(subject, features)
    meta = read_subject_metadata(img2fmri_model_dir, subject)
    readout = load_arrays(readout_path(img2fmri_model_dir, subject))
    ours = features @ readout["whole_brain.weight"].T + readout["whole_brain.bias"]
    assert list(meta.info["volume_shape"]) == list(volume.shape[:3])
    np.testing.assert_array_equal(np.argwhere(~np.isnan(volume[..., 0])), meta.voxel_ijk)
    expected = volume[tuple(meta.voxel_ijk.T)].T
    assert np.abs(ours - expected).max() <= 1e-5


def test_metadata_and_provenance(img2fmri_model_dir):
    meta = read_subject_metadata(img2fmri_model_dir, 2)
    info = meta.info
    assert info["rois"][:5] == list(ROIS)
    assert info["rois"][5:7] == ["LHEarlyVis", "RHEarlyVis"] and len(info["rois"]) == 15
    assert info["n_rows"] == sum(a + b for a, b in COUNTS[2]) == meta.row_voxel.size
    assert info["n_voxels"] == meta.voxel_ijk.shape[0] < info["n_rows"]  # LOC and others overlap
    assert info["ridge_alpha"]["EarlyVis"] == pytest.approx(35938.1, rel=1e-5)
    assert info["ridge_alpha"]["PPA"] == pytest.approx(12915.5, rel=1e-5)
    prov = info["provenance"]
    assert prov["sha256"] == WHEEL.sha256 and prov["wheel"] == WHEEL.filename
    assert "img2fmri/models/subj2_LOC_model.pkl" in prov["files"]
    assert not any("subj1_" in name for name in prov["files"])
    flat = np.ravel_multi_index(tuple(meta.voxel_ijk.T), info["volume_shape"])
    assert np.all(np.diff(flat) > 0)  # C order, no duplicates


def test_reimport_is_a_no_op(img2fmri_model_dir, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in img2fmri_model_dir.rglob("*")}
    berg_dir = img2fmri_model_dir.parents[3]
    # complete and matching: not even the wheel is looked for
    assert importer.import_img2fmri(berg_dir, wheel=tmp_path / "absent.whl") == img2fmri_model_dir
    assert {p: p.stat().st_mtime_ns for p in img2fmri_model_dir.rglob("*")} == before


def test_cli_entry_runs_the_importer(img2fmri_model_dir, capsys):
    from berg.cli import main

    assert main(["import-img2fmri", "--berg-dir", str(img2fmri_model_dir.parents[3])]) == 0
    assert capsys.readouterr().out.strip() == str(img2fmri_model_dir)


def test_failure_mid_import_leaves_no_model(img2fmri_wheel, tmp_path, monkeypatch):
    calls = []
    real_save = importer.save_arrays

    def failing_save(path, arrays, metadata=None):
        calls.append(path)
        if len(calls) == 2:  # after sub-01's readout is written, before its index map
            raise RuntimeError("disk full")
        real_save(path, arrays, metadata)

    monkeypatch.setattr(importer, "save_arrays", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        importer.import_img2fmri(tmp_path, wheel=img2fmri_wheel)
    assert len(calls) == 2
    parent = tmp_path / CARD.folder.parent
    assert not (tmp_path / CARD.folder).exists()
    assert [p.name for p in parent.iterdir()] == [".model-resnet18.lock"]
    assert not list(tmp_path.rglob("*.safetensors"))


def test_wrong_sha256_raises_integrity_error(tmp_path):
    fake = tmp_path / WHEEL.filename
    fake.write_bytes(b"not the wheel")
    with pytest.raises(IntegrityError) as info:
        importer.locate_wheel(fake)
    message = str(info.value)
    assert str(fake) in message and WHEEL.sha256 in message
    assert hashlib.sha256(b"not the wheel").hexdigest() in message
    # a corrupt cached copy is caught the same way
    with pytest.raises(IntegrityError):
        importer.locate_wheel(cache_dir=tmp_path, offline=True)


def test_offline_without_cache_raises_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BERG_OFFLINE", "1")
    monkeypatch.setenv("BERG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(OfflineError) as info:
        importer.import_img2fmri(tmp_path / "berg")
    message = str(info.value)
    assert WHEEL.filename in message
    assert "-m pip download img2fmri==1.0 --no-deps" in message and str(tmp_path / "cache" / "wheels") in message
    assert not (tmp_path / "berg" / CARD.folder).exists()


def test_missing_wheel_path_names_the_parameter(tmp_path):
    with pytest.raises(importer.MissingFilesError, match="wheel="):
        importer.locate_wheel(tmp_path / "nowhere.whl")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_unpickler_admits_only_arrays_and_ridge():
    with pytest.raises(UnsafePickleError, match="system"):
        importer.read_ridge(pickle.dumps(_Evil()))
    with pytest.raises(ModelFormatError, match="coef_"):
        importer.read_ridge(pickle.dumps({"coef_": [1, 2]}))
    with pytest.raises(ModelFormatError):
        importer.read_ridge(b"\x80\x04garbage")


def test_unpickler_reads_a_ridge_pickled_by_current_scikit_learn():
    """Besides the wheel's sklearn 1.1.1 / NumPy 1 pickles, today's (NumPy 2 module names) read the same."""
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 512)).astype(np.float32), rng.normal(size=(40, 3)).astype(np.float32)
    model = Ridge(alpha=7.0).fit(x, y)
    params = importer.read_ridge(pickle.dumps(model))
    assert params.alpha == 7.0 and params.coef.shape == (3, 512)
    np.testing.assert_allclose(x @ params.coef.T + params.intercept, model.predict(x), atol=1e-5)


def test_marker_lists_every_file(img2fmri_model_dir):
    marker = json.loads((img2fmri_model_dir / importer.MARKER).read_text())
    on_disk = sorted(p.relative_to(img2fmri_model_dir).as_posix() for p in img2fmri_model_dir.rglob("*")
                     if p.is_file() and p.name != "berg_import.json")
    assert marker["files"] == on_disk and len(on_disk) == 12


def test_end_to_end_equals_torchvision_plus_the_wheels_ridge(img2fmri_model_dir, img2fmri_wheel, tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    weights = tmp_path / "resnet18-untrained.pth"
    torch.save(net.state_dict(), weights)
    images = np.random.default_rng(2).integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    # the reference: img2fmri's preprocessing (224 x 224 already, so resizing is the identity) and pooled features
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        feats = torch.nn.Sequential(*list(net.children())[:-1])(x).flatten(1).numpy()
    wheel = Wheel(img2fmri_wheel)
    berg_dir = img2fmri_model_dir.parents[3]
    common = dict(subject=2, device="cpu", backbone_weights=str(weights), verify_hash=False, berg_dir=berg_dir)

    model = berg.get_encoding_model("fmri-bold5000-resnet18", selection={"roi": "LOC"}, **common)
    ours = berg.encode(model, images)
    assert np.abs(ours - wheel.ridge(2, "LOC").predict(feats)).max() <= 1e-4

    model = berg.get_encoding_model("fmri-bold5000-resnet18", **common)
    ours, meta = berg.encode(model, images, return_metadata=True)
    volume = wheel.subject_volume(2, feats)
    assert np.abs(ours - volume[tuple(np.asarray(meta["voxel_ijk"]).T)].T).max() <= 1e-4


def test_force_reimport_replaces_the_folder_whole(img2fmri_model_dir, img2fmri_wheel, tmp_path):
    import shutil

    target = tmp_path / CARD.folder
    shutil.copytree(img2fmri_model_dir, target)
    (target / "leftover.txt").write_text("from an older import")
    assert importer.import_img2fmri(tmp_path, wheel=img2fmri_wheel, force=True) == target
    assert not (target / "leftover.txt").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == [".model-resnet18.lock", "model-resnet18"]
    for subject in (1, 2, 3):
        new, old = load_arrays(readout_path(target, subject)), load_arrays(readout_path(img2fmri_model_dir, subject))
        assert new.keys() == old.keys() and all(np.array_equal(new[k], old[k]) for k in new)

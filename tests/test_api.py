"""The public API on a tiny model directory: encode, selection, metadata, to_nifti."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import berg
from berg import BERG
from _support import write_test_model


def _reference_features(images_hwc: np.ndarray) -> np.ndarray:
    """Untrained ResNet-18 seeded as berg seeds it, ImageNet normalisation, global-average-pool output (N, 512)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    x = torch.from_numpy(images_hwc).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        return net(x).double().numpy()


@pytest.fixture(scope="module")
def reference(images):
    return _reference_features(images)


def test_encode_matches_torchvision_plus_readout(tiny_model, berg_dir, images, reference):
    model = berg.get_encoding_model("test-resnet18", subject=2, device="cpu", backbone_weights=None, berg_dir=berg_dir)
    responses, meta = berg.encode(model, images, return_metadata=True)
    raw = tiny_model[2]
    want = reference @ raw["coef"].T + raw["intercept"]
    assert responses.shape == (3, 60) and responses.dtype == np.float32
    np.testing.assert_allclose(responses, want, atol=1e-4, rtol=1e-4)
    assert meta["model_id"] == "test-resnet18" and meta["subject"] == 2 and meta["n_voxels"] == 60
    assert meta["backbone"]["weights"] == "untrained"
    np.testing.assert_array_equal(meta["voxel_ijk"], raw["voxel_ijk"])
    assert set(meta["roi_columns"]) == {"lA", "rA", "B"}
    assert meta["accuracy"]["correlation"].shape == (60,)
    assert meta["berg_version"] == berg.__version__


def test_facade_and_layouts_agree(tiny_model, berg_dir, images):
    b = BERG(berg_dir)
    model = b.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None)
    hwc = b.encode(model, images, batch_size=2)
    chw = b.encode(model, np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    as_float = b.encode(model, torch.from_numpy(images).float() / 255)
    as_int16 = b.encode(model, images.astype(np.int16))
    np.testing.assert_allclose(hwc, chw, atol=1e-5)
    np.testing.assert_allclose(hwc, as_int16, atol=1e-5)
    np.testing.assert_allclose(hwc, as_float, atol=1e-3)


def test_pil_and_file_inputs(tiny_model, berg_dir, images, tmp_path):
    model = berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(img).save(paths[-1])
    from_array = berg.encode(model, images)
    from_pil = berg.encode(model, [Image.fromarray(img) for img in images])
    from_paths = berg.encode(model, [str(p) for p in paths], show_progress=True)
    np.testing.assert_allclose(from_pil, from_array, atol=1e-5)
    np.testing.assert_allclose(from_paths, from_array, atol=1e-5)
    mixed = [Image.fromarray(images[0]), Image.fromarray(images[1][:200, :150])]  # different sizes in one batch
    assert berg.encode(model, mixed).shape == (2, 60)


@pytest.mark.parametrize("selection, rows", [
    ({"roi": "lA"}, lambda r: r["lA"]),
    ({"roi": ["rA", "B"]}, lambda r: np.concatenate([r["rA"], [v for v in r["B"] if v not in set(r["rA"])]])),
    ({"roi": ["B", "B"]}, lambda r: r["B"]),
    ({"voxels": np.isin(np.arange(60), [3, 7, 59]).astype(int)}, lambda r: np.array([3, 7, 59])),
    ({"roi": None, "voxels": np.arange(60) % 2 == 0}, lambda r: np.arange(0, 60, 2)),
    (None, lambda r: np.arange(60)),
], ids=["roi", "roi-list-union", "roi-duplicate", "voxel-mask", "roi-none-uses-voxels", "whole-brain"])
def test_selection_picks_exact_columns(shared_tiny_model, shared_model, images, selection, rows):
    part = berg.get_encoding_model("test-resnet18", subject=1, selection=selection, device="cpu",
                                   backbone_weights=None, berg_dir=shared_tiny_model["berg_dir"])
    want_cols = rows(shared_tiny_model[1]["rois"])
    got, meta = berg.encode(part, images[:2], return_metadata=True)
    np.testing.assert_allclose(got, berg.encode(shared_model, images[:2])[:, want_cols], atol=1e-5)
    np.testing.assert_array_equal(meta["voxel_ijk"], shared_tiny_model[1]["voxel_ijk"][want_cols])
    lA = set(shared_tiny_model[1]["rois"]["lA"])
    np.testing.assert_array_equal(meta["roi_columns"].get("lA", []), [i for i, v in enumerate(want_cols) if v in lA])


def test_to_nifti_puts_each_value_at_its_voxel(shared_model, images):
    responses, meta = berg.encode(shared_model, images, return_metadata=True)
    img4d = berg.to_nifti(responses, meta)
    img3d = berg.to_nifti(responses[1], meta)
    assert img4d.shape == (6, 7, 5, 3) and img3d.shape == (6, 7, 5)
    np.testing.assert_array_equal(img4d.affine, meta["affine"])
    data = img4d.get_fdata()
    i, j, k = meta["voxel_ijk"].T
    np.testing.assert_allclose(data[i, j, k, :], responses.T, rtol=1e-6)
    np.testing.assert_allclose(img3d.get_fdata()[i, j, k], responses[1], rtol=1e-6)
    outside = np.ones((6, 7, 5), bool)
    outside[i, j, k] = False
    assert np.isnan(data[outside]).all()


def test_metadata_without_backbone(tiny_model, berg_dir):
    meta = berg.get_model_metadata("test-resnet18", subject=2, berg_dir=berg_dir)
    assert meta["n_voxels"] == 60
    np.testing.assert_array_equal(meta["roi_columns"]["rA"], tiny_model[2]["rois"]["rA"])
    np.testing.assert_array_equal(meta["voxel_ijk"], tiny_model[2]["voxel_ijk"])


def test_listing_and_describe(tiny_model, berg_dir):
    b = BERG(berg_dir)
    assert {"fmri-bmd-s3d", "fmri-bold5000-resnet18", "test-resnet18"} <= set(b.list_models())
    assert b.describe("fmri-bmd-s3d")["n_voxels"][1] == 108219
    assert b.get_model_catalog()["fmri-bold5000-resnet18"]["subjects"] == [1, 2, 3, "group"]


def test_projection_model_matches_chain(berg_dir, images, reference):
    raw = write_test_model(berg_dir, model_id="test-svd", n_voxels=30, n_components=6)
    model = berg.get_encoding_model("test-svd", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)
    z = ((reference - raw["mean"]) / raw["scale"]) @ raw["components"].T
    want = z @ raw[1]["coef"].T + raw[1]["intercept"]
    got = berg.encode(model, images)
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-5


def test_weights_file_with_hash_check(tiny_model, berg_dir, shared_model, images, tmp_path):
    torch.manual_seed(3)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "my-resnet18.pth"
    torch.save(state, path)
    with pytest.raises(berg.BergError, match="verify_hash=False"):
        berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=path, berg_dir=berg_dir)
    model = berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=path,
                                    verify_hash=False, berg_dir=berg_dir)
    assert model.metadata["backbone"]["sha256"] and model.metadata["backbone"]["weights"] == "file"
    assert not np.allclose(berg.encode(model, images[:1]), berg.encode(shared_model, images[:1]))  # untrained


def test_encode_streams_into_out(shared_model, images, tmp_path):
    import h5py

    model = shared_model
    want = berg.encode(model, images)
    with h5py.File(tmp_path / "r.h5", "w") as h5:
        out = h5.create_dataset("r", shape=(3, 60), dtype="f4")
        assert berg.encode(model, images, batch_size=2, out=out) is out
        np.testing.assert_allclose(out[()], want, atol=1e-6)
    with pytest.raises(berg.BergError, match=r"out has shape \(2, 60\); it must be \(3, 60\)"):
        berg.encode(model, images, out=np.empty((2, 60), np.float32))

"""The ``berg`` command line: list, info and encode to .npy, .h5 and .nii.gz."""

import h5py
import nibabel as nib
import numpy as np
from PIL import Image

from berg.cli import main


def test_list_and_info(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fmri-bmd-s3d" in out and "fmri-bold5000-resnet18" in out
    assert main(["info", "fmri-bmd-s3d"]) == 0
    assert "features.5.cat" in capsys.readouterr().out
    assert main(["info", "fmri-bmd-s3"]) == 2
    assert "Did you mean: fmri-bmd-s3d" in capsys.readouterr().err


def test_encode_outputs(tiny_model, berg_dir, images, tmp_path):
    paths = []
    for i, img in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    common = ["--subject", "1", "--backbone-weights", "untrained", "--device", "cpu", "--berg-dir", str(berg_dir),
              "--quiet"]
    assert main(["encode", "test-resnet18", *paths, "-o", str(tmp_path / "r.npy"), *common]) == 0
    assert main(["encode", "test-resnet18", *paths, "-o", str(tmp_path / "r.h5"), "--roi", "lA", "--roi", "B",
                 *common]) == 0
    assert main(["encode", "test-resnet18", *paths, "-o", str(tmp_path / "r.nii.gz"), "--roi", "rA", *common]) == 0
    full = np.load(tmp_path / "r.npy")
    assert full.shape == (3, 60)
    rois = tiny_model[1]["rois"]
    with h5py.File(tmp_path / "r.h5") as h5:
        cols = np.concatenate([rois["lA"], [v for v in rois["B"] if v not in set(rois["lA"])]])
        np.testing.assert_allclose(h5["responses"][()], full[:, cols], atol=1e-5)
        np.testing.assert_array_equal(h5["roi_columns/lA"][()], np.arange(len(rois["lA"])))
        assert h5.attrs["model_id"] == "test-resnet18"
    img = nib.load(tmp_path / "r.nii.gz")
    i, j, k = tiny_model[1]["voxel_ijk"][rois["rA"]].T
    np.testing.assert_allclose(img.get_fdata()[i, j, k, :], full[:, rois["rA"]].T, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r.")) == ["r.h5", "r.nii.gz", "r.npy"]

"""One toy model per output space, each a card plus native data: encode, select and write through the space."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest

import berg
from berg.errors import InvalidArgumentError, InvalidSelectionError
from _support import write_space_model

KINDS = ("volume", "surface", "sensors")


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    berg_dir = tmp_path_factory.mktemp("spaces")
    return berg_dir, {kind: write_space_model(berg_dir, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def photos():
    return np.random.default_rng(2).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)


def _model(toys, kind, selection=None):
    berg_dir, _ = toys
    return berg.get_encoding_model(f"toy-{kind}", subject=1, selection=selection, device="cpu",
                                   backbone_weights=None, berg_dir=berg_dir)


def _expected(toys, kind, model, photos):
    """The ridge map applied to the backbone's pool features, in float64: (n_stimuli, n_outputs)."""
    import torch

    with torch.inference_mode():
        feats = model.extractor.extract(torch.from_numpy(photos).permute(0, 3, 1, 2))
    raw = toys[1][kind]
    return feats["avgpool"].flatten(1).double().numpy() @ raw["weight"].T + raw["bias"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_space_gives_its_own_form_of_the_same_columns(toys, photos, kind):
    model = _model(toys, kind)
    out, meta = berg.encode(model, photos, return_metadata=True, show_progress=False)
    expected = _expected(toys, kind, model, photos)
    assert meta["space"]["kind"] == kind and set(meta["coordinates"]) >= set(toys[1][kind]["coordinates"])
    if kind == "volume":
        assert out.shape == (3, 12)
        flat = out
    elif kind == "surface":
        assert isinstance(out, tuple) and [part.shape for part in out] == [(3, 30), (3, 30)]
        flat = np.concatenate(out, axis=1)
    else:
        assert out.shape == (3, 2, 4, 6)  # stimuli, repetitions, channels, times
        flat = out.reshape(3, -1)
    np.testing.assert_allclose(flat, expected, rtol=1e-5, atol=1e-5)


def test_masks_belong_to_their_space(toys, photos):
    vox = np.zeros(12, int)
    vox[[1, 7]] = 1
    model = _model(toys, "volume", {"voxels": vox})
    np.testing.assert_allclose(berg.encode(model, photos, show_progress=False),
                               _expected(toys, "volume", model, photos)[:, [1, 7]], rtol=1e-5, atol=1e-5)
    lh = np.zeros(10242, bool)
    lh[[0, 29]] = True
    model = _model(toys, "surface", {"lh_vertices": lh})
    left, right = berg.encode(model, photos, show_progress=False)
    expected = _expected(toys, "surface", model, photos)
    np.testing.assert_allclose(left, expected[:, [0, 29]], rtol=1e-5, atol=1e-5)
    assert right.shape == (3, 30)
    lh[100] = True  # a vertex the model has no output for
    with pytest.raises(InvalidSelectionError, match="no output"):
        _model(toys, "surface", {"lh_vertices": lh})
    left, right = berg.encode(_model(toys, "surface", {"roi": "L"}), photos, show_progress=False)
    assert left.shape == (3, 3) and right.shape == (3, 0)  # an ROI without right-hemisphere vertices
    times = np.array([0, 1, 1, 0, 0, 1])
    model = _model(toys, "sensors", {"channels": ["Pz", "Fz"], "timepoints": times})
    out = berg.encode(model, photos, show_progress=False)
    full = _expected(toys, "sensors", model, photos).reshape(3, 2, 4, 6)
    np.testing.assert_allclose(out, full[:, :, [2, 0]][..., [1, 2, 5]], rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidSelectionError, match="Did you mean: Cz"):
        _model(toys, "sensors", {"channels": ["CZ"]})
    with pytest.raises(InvalidSelectionError, match="keys for a sensors model: 'roi', 'channels', 'timepoints'"):
        _model(toys, "sensors", {"voxels": [1]})


@pytest.mark.parametrize("kind, suffixes, refused", [
    ("volume", [".npy", ".h5", ".nii.gz"], ".func.gii"),
    ("surface", [".npy", ".h5", ".func.gii"], ".nii.gz"),
    ("sensors", [".npy", ".h5"], ".nii.gz"),
])
def test_writers_place_each_space(toys, photos, tmp_path, kind, suffixes, refused):
    from berg.writers import writer_for

    model = _model(toys, kind)
    meta = model.metadata
    flat = berg.encode(model, photos, show_progress=False, out=np.empty((3, model.n_outputs), np.float32))
    for suffix in suffixes:
        path = tmp_path / f"out{suffix}"
        writer = writer_for(path, "responses", meta)
        written = writer.write_responses(path, flat.shape, meta, lambda target: berg.encode(
            model, photos, show_progress=False, out=target))
        assert written == writer.files(path, meta) and all(p.is_file() for p in written)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), flat, rtol=1e-6)
    with h5py.File(tmp_path / "out.h5") as h5:  # plain h5py: columns and their coordinates
        np.testing.assert_allclose(h5["responses"][()], flat, rtol=1e-6)
        for name, values in toys[1][kind]["coordinates"].items():
            np.testing.assert_array_equal(h5[name][()], values)
        assert h5.attrs["model_id"] == f"toy-{kind}"
    if kind == "volume":
        np.testing.assert_allclose(nib.load(tmp_path / "out.nii.gz").get_fdata(),
                                   berg.to_nifti(flat, meta).get_fdata(), rtol=1e-6)
    with pytest.raises(InvalidArgumentError, match=f"for responses to stimuli of a {kind} model"):
        writer_for(tmp_path / f"out{refused}", "responses", meta)

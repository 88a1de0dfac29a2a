"""Every path that writes volumes gives the same volumes for the same responses, by one documented rule for
columns that share a voxel (their mean): berg.to_nifti, berg encode -o, predict_movie(output=) and batch jobs."""

import nibabel as nib
import numpy as np
from _support import ramp_video, write_space_model

import berg
import berg.batch
from berg.cli import main

MODEL = "toy-volume"


def _by_the_rule(responses: np.ndarray, ijk: np.ndarray, shape) -> np.ndarray:
    """(n, n_columns) -> (X, Y, Z, n): each voxel the mean of its columns, NaN where none is (numpy, no berg)."""
    out = np.full((*shape, len(responses)), np.nan)
    for voxel in np.unique(ijk, axis=0):
        at = (ijk == voxel).all(axis=1)
        out[tuple(voxel)] = responses[:, at].mean(axis=1)
    return out


def test_every_path_writes_the_same_volumes_by_the_mean_rule(tmp_path):
    berg_dir = tmp_path / "berg_dir"
    write_space_model(berg_dir, "volume", shared_voxels=True)
    model = berg.get_encoding_model(MODEL, subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)
    meta = model.metadata
    ijk, shape = np.asarray(meta["voxel_ijk"]), tuple(meta["volume_shape"])
    assert len(np.unique(ijk, axis=0)) == len(ijk) - 4  # four columns land on voxels other columns have

    photos = np.random.default_rng(0).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    np.save(tmp_path / "photos.npy", photos)
    responses = berg.encode(model, photos, show_progress=False)
    expected = _by_the_rule(responses.astype(np.float64), ijk, shape)
    in_memory = berg.to_nifti(responses, meta).get_fdata()
    np.testing.assert_allclose(in_memory, expected, rtol=1e-6, equal_nan=True)

    assert main(["encode", MODEL, str(tmp_path / "photos.npy"), "-o", str(tmp_path / "cli.nii.gz"), "--subject", "1",
                 "--backbone-weights", "untrained", "--device", "cpu", "--berg-dir", str(berg_dir), "-q"]) == 0
    cli = nib.load(tmp_path / "cli.nii.gz")
    np.testing.assert_array_equal(cli.get_fdata(), in_memory)
    np.testing.assert_allclose(cli.affine, meta["affine"])

    film = ramp_video(tmp_path / "film.mp4", 40, 10.0, size=(32, 48))
    movie = berg.predict_movie(model, film, tr=1.0, hrf="glover", show_progress=False,
                               output=tmp_path / "movie.nii.gz")
    from_movie = nib.load(tmp_path / "movie.nii.gz")
    np.testing.assert_allclose(from_movie.get_fdata(), _by_the_rule(movie.bold.astype(np.float64), ijk, shape),
                               rtol=1e-6, equal_nan=True)
    assert from_movie.header.get_zooms()[3] == 1.0  # the TR

    job = {"output": str(tmp_path / "out"), "berg_dir": str(berg_dir), "rows": [
        {"stimuli": str(film), "model": MODEL, "subjects": [1], "tr": 1.0, "hrf": "glover", "device": "cpu",
         "backbone_weights": "untrained"}]}
    assert berg.batch.run(job, show_progress=False).ok
    batch = next((tmp_path / "out" / "sub-01" / "func").glob("*_bold.nii.gz"))
    np.testing.assert_array_equal(nib.load(batch).get_fdata(), from_movie.get_fdata())

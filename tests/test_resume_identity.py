"""A resumed film never reuses samples made under other parameters: other columns of the same count, other backbone
weights, other model files, or another film at the same path are refused; the same run resumes to the result of an
uninterrupted one."""

import copy
import os

import numpy as np
import pytest
from _support import FakeModel, flash_video, ramp_video, write_space_model

import berg
from berg.errors import ResumeError
from berg.metadata import columns_digest


class Interrupted(FakeModel):
    """Fails after its first batch, as a killed run would stop."""

    def predict_staged(self, staged, **options):
        for i, block in enumerate(super().predict_staged(staged, **options)):
            if i == 1:
                raise KeyboardInterrupt
            yield block


def _run(model, film, out, resume):
    return berg.predict_movie(model, film, tr=1.0, batch_size=4, sample_rate_hz=4.0, show_progress=False,
                              output=out / "p.h5", resume=resume)


def _changed(**metadata) -> FakeModel:
    model = FakeModel()
    model.metadata = {**copy.deepcopy(model.metadata), **metadata}
    return model


@pytest.mark.parametrize("other, key", [
    (lambda: _changed(voxel_ijk=np.array([[1, 0, 0], [0, 0, 0], [0, 2, 1]])), "columns"),
    (lambda: _changed(backbone={"architecture": "resnet18", "weights": "other.pth"}), "backbone"),
    (lambda: _changed(provenance={"readout_files": [{"file": "w.safetensors", "bytes": 1, "mtime_ns": 2}]}),
     "model_files"),
])
def test_a_resume_under_other_parameters_is_refused(tmp_path, other, key):
    film = ramp_video(tmp_path / "f.mp4", 60, 10.0)
    with pytest.raises(KeyboardInterrupt):
        _run(Interrupted(), film, tmp_path, resume=True)
    with pytest.raises(ResumeError, match=key):
        _run(other(), film, tmp_path, resume=True)
    resumed = _run(FakeModel(), film, tmp_path, resume=True)  # the same parameters resume
    (tmp_path / "whole").mkdir()
    whole = _run(FakeModel(), film, tmp_path / "whole", resume=False)
    np.testing.assert_array_equal(resumed.bold, whole.bold)


def test_another_film_at_the_same_path_is_refused(tmp_path):
    film = ramp_video(tmp_path / "f.mp4", 60, 10.0)
    with pytest.raises(KeyboardInterrupt):
        _run(Interrupted(), film, tmp_path, resume=True)
    stat = os.stat(film)
    flash_video(tmp_path / "g.mp4", 60, 10.0, {5: (255, 0, 0)})
    os.replace(tmp_path / "g.mp4", film)  # another film, same name, its old mtime put back
    os.utime(film, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ResumeError, match="video_file"):
        _run(FakeModel(), film, tmp_path, resume=True)


def test_an_encoding_model_names_its_columns_and_files(tmp_path):
    berg_dir = tmp_path / "berg_dir"
    write_space_model(berg_dir, "volume")
    first, second = np.zeros(12, bool), np.zeros(12, bool)
    first[:4], second[4:8] = True, True  # same size, other columns
    models = [berg.get_encoding_model("toy-volume", subject=1, selection={"voxels": mask}, device="cpu",
                                      backbone_weights=None, berg_dir=berg_dir) for mask in (first, second)]
    assert columns_digest(models[0].metadata) != columns_digest(models[1].metadata)
    files = models[0].metadata["provenance"]["readout_files"]
    assert {f["file"] for f in files} and all(f["bytes"] > 0 and f["mtime_ns"] > 0 for f in files)


def test_a_film_commits_while_the_readout_batch_is_far_from_full(tmp_path, monkeypatch):
    """With the default readout_mb a toy model's readout batch holds about 100,000 frames: without a commit
    interval nothing of a film would be saved before its end."""
    import berg.movie

    berg_dir = tmp_path / "berg_dir"
    write_space_model(berg_dir, "volume")
    model = berg.get_encoding_model("toy-volume", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)

    class StopsAfterTwoBlocks:
        stimulus_kind, n_frames, n_outputs, metadata = "image", None, model.n_outputs, model.metadata
        stage = staticmethod(model.stage)

        def predict_staged(self, staged, **options):
            for i, block in enumerate(model.predict_staged(staged, **options)):
                if i == 2:
                    raise KeyboardInterrupt
                yield block

    film = ramp_video(tmp_path / "f.mp4", 40, 10.0, size=(32, 48))
    monkeypatch.setattr(berg.movie, "COMMIT_EVERY_S", 0.0)  # a commit after every batch, whatever the time
    with pytest.raises(KeyboardInterrupt):
        berg.predict_movie(StopsAfterTwoBlocks(), film, tr=1.0, batch_size=3, show_progress=False,
                           output=tmp_path / "p.h5", resume=True)
    import h5py

    from berg.sinks import partial_path

    with h5py.File(partial_path(tmp_path / "p.h5"), "r") as h5:
        assert h5.attrs["n_done"] == 6  # two committed blocks of one batch each
    resumed = berg.predict_movie(model, film, tr=1.0, batch_size=3, show_progress=False,
                                 output=tmp_path / "p.h5", resume=True)
    whole = berg.predict_movie(model, film, tr=1.0, batch_size=3, show_progress=False)
    np.testing.assert_allclose(resumed.bold, whole.bold, rtol=1e-6, atol=1e-6 * np.abs(whole.bold).max())

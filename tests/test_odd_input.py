"""Odd stimuli and outputs get typed errors or the right answer: 16-bit images, empty images, folders given as
files, bfloat16 tensors, decompression bombs, unreadable arrays, absurd TRs, failed films, busy output roots."""

import threading

import numpy as np
import pytest
import torch
from _support import FakeModel, job_dict, make_assets, ramp_video
from PIL import Image

import berg
import berg.batch
from berg.batch.runner import output_root_lock
from berg.cli import main
from berg.errors import InvalidArgumentError, InvalidStimulusError, JobError
from berg.stimuli import as_stimulus_set


def _load(stimulus) -> torch.Tensor:
    return as_stimulus_set(stimulus, "image").load(0, 1)


def test_sixteen_bit_images_are_scaled_by_their_full_range(tmp_path):
    gradient = np.linspace(0, 65535, 8 * 512).round().astype(np.uint16).reshape(8, 512)
    Image.fromarray(gradient).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as handle:
        assert handle.mode.startswith("I")  # PIL reads it as 16-bit: convert("RGB") would clip it
        clipped = np.asarray(handle.convert("RGB"))[..., 0]
    assert (clipped == 255).mean() > 0.99
    loaded = _load([tmp_path / "g16.png"])[0]
    assert loaded.dtype == torch.uint8 and loaded.shape == (3, 8, 512)
    np.testing.assert_array_equal(loaded[0].numpy(), np.rint(gradient / 257.0).astype(np.uint8))
    assert (loaded == 255).float().mean() < 0.01 and torch.equal(loaded[0], loaded[2])


@pytest.mark.parametrize("stimulus, words", [
    (np.zeros((1, 0, 0, 3), np.uint8), "0 x 0 pixels"),
    (np.zeros((2, 3, 5, 0), np.uint8), "5 x 0 pixels"),
])
def test_empty_images_are_refused(stimulus, words):
    with pytest.raises(InvalidStimulusError, match=words):
        as_stimulus_set(stimulus, "image")


def test_a_folder_is_not_an_image_file(tmp_path):
    with pytest.raises(InvalidStimulusError, match="is a folder"):
        as_stimulus_set([tmp_path], "image")
    with pytest.raises(InvalidStimulusError, match="is a folder"):
        as_stimulus_set([tmp_path], "video", n_frames=4)


def test_bfloat16_and_float16_tensors_are_taken_as_their_float32_values():
    values = torch.rand(2, 3, 6, 7).to(torch.bfloat16)
    for tensor in (values, values.to(torch.float16)):
        loaded = as_stimulus_set(tensor, "image").load(0, 2)
        assert loaded.dtype == torch.float32 and torch.equal(loaded, tensor.float())


def test_a_decompression_bomb_is_a_stimulus_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels is over twice the limit, as a bomb is
    with pytest.raises(InvalidStimulusError, match="big.png.*larger than PIL's limit"):
        _load([tmp_path / "big.png"])


@pytest.mark.parametrize("content", ["corrupt", "objects"])
def test_an_unreadable_array_file_is_one_clear_cli_error(tmp_path, capsys, content):
    path = tmp_path / "stimuli.npy"
    if content == "corrupt":
        path.write_bytes(b"\x93NUMPY garbage")
    else:
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["encode", "fmri-bold5000-resnet18", str(path), "-o", str(tmp_path / "r.npy"), "--subject", "1"]) == 1
    err = capsys.readouterr().err
    assert "cannot be read as a numpy array" in err and "Traceback" not in err


def test_an_output_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "out.nii.gz").mkdir()
    assert main(["encode", "fmri-bold5000-resnet18", "x.png", "-o", str(tmp_path / "out.nii.gz"),
                 "--subject", "1"]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_an_absurd_tr_is_refused_by_name(tmp_path):
    film = ramp_video(tmp_path / "f.mp4", 10, 10.0)
    with pytest.raises(InvalidArgumentError, match=r"tr=1e-09"):
        berg.predict_movie(FakeModel(), film, tr=1e-9, show_progress=False)


def test_a_failed_film_without_resume_leaves_nothing_behind(tmp_path):
    film = ramp_video(tmp_path / "f.mp4", 40, 10.0)

    class Failing(FakeModel):
        def predict_staged(self, staged, **options):
            yield from super().predict_staged(staged, **options)
            raise RuntimeError("the model broke")

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="the model broke"):
        berg.predict_movie(Failing(), film, tr=1.0, show_progress=False, output=[out / "p.h5", out / "p.nii.gz"])
    assert list(out.iterdir()) == []


def test_a_second_run_on_a_busy_output_root_is_refused_with_its_owner(tmp_path):
    files = make_assets(tmp_path)
    out = tmp_path / "out"
    held, release = threading.Event(), threading.Event()

    def hold():
        with output_root_lock(out, "first"):
            held.set()
            release.wait(60)

    first = threading.Thread(target=hold)
    first.start()
    try:
        assert held.wait(60)
        with pytest.raises(JobError, match=r"in use by another berg batch run \(pid \d+ on host"):
            berg.batch.run(job_dict(tmp_path, out), show_progress=False)
        assert not (out / "sub-01").exists() and files["photos"]
    finally:
        release.set()
        first.join()
    assert berg.batch.run(job_dict(tmp_path, out), show_progress=False).ok  # free again


def test_an_output_root_that_cannot_be_written_is_a_job_error(tmp_path):
    (tmp_path / "a_file").write_text("")
    files = make_assets(tmp_path)
    with pytest.raises(JobError, match="cannot be written") as caught:
        berg.batch.run(job_dict(tmp_path, tmp_path / "a_file" / "out"), show_progress=False)
    assert caught.value.field == "output" and files["films"]


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(["encode", "fmri-bold5000-resnet18", "x.png", "-o", str(tmp_path / "a_file" / "r.npy"),
                 "--subject", "1"]) == 1
    assert "cannot be written" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError, match="cannot be written"):
        berg.predict_movie(FakeModel(), ramp_video(tmp_path / "f.mp4", 10, 10.0), tr=1.0, show_progress=False,
                           output=tmp_path / "a_file" / "p.nii.gz")

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from _support import FakeModel, flash_video, ramp_level, ramp_video
from nilearn.glm.first_level import compute_regressor

import berg
import berg.api
from berg.cli import main as cli_main
from berg.errors import BergError
from berg.movie import predict_movie, scan_times, to_scans
from berg.sinks import ResumeError, partial_path, read_h5

WHITE, RED = (255, 255, 255), (255, 0, 0)
FPS = 10.0
FLASH_FRAMES = [50, 51, 52, 300, 420]  # 5.0-5.3 s, 30.0 s and 42.0 s


@pytest.fixture(scope="module")
def flashes(tmp_path_factory):
    # 60 s at 10 frames/s, 8x8: black, white at frames 50-52 and 300, red at 420
    colours = {i: WHITE for i in FLASH_FRAMES[:-1]} | {FLASH_FRAMES[-1]: RED}
    return flash_video(tmp_path_factory.mktemp("movie") / "flashes.mp4", 600, FPS, colours)


def _peaks(times, series, threshold):
    above = series > threshold
    return times[above & np.r_[True, series[1:] >= series[:-1]] & np.r_[series[:-1] >= series[1:], True]]


def test_without_hrf_the_sample_series_peaks_at_the_flashes(flashes):
    result = predict_movie(FakeModel(), flashes, tr=2.0, hrf=None, sample_rate_hz=None, show_progress=False)
    red = result.samples[:, 0]
    np.testing.assert_allclose(result.sample_times, np.arange(600) / FPS)
    np.testing.assert_allclose(result.sample_times[red > 0.5], np.array(FLASH_FRAMES) / FPS)
    assert red[red < 0.5].max() < 0.02  # black elsewhere, up to codec error
    np.testing.assert_allclose(result.samples[red > 0.5, 1], [1, 1, 1, 1, 0], atol=0.02)  # green: white only
    np.testing.assert_allclose(result.baselines["brightness"], result.samples.max(axis=1), atol=0.02)
    # sampled at 10 Hz from the film clock, the same flashes are found
    sampled = predict_movie(FakeModel(), flashes, tr=2.0, hrf=None, sample_rate_hz=10.0, show_progress=False,
                            baselines=())
    np.testing.assert_allclose(sampled.samples, result.samples)
    # per TR (no HRF, low-pass only) the 30 s flash lands at scan 15
    assert int(np.argmax(result.bold[10:20, 1])) + 10 == 15


@pytest.mark.parametrize("hrf", ["spm", "glover"])
def test_with_hrf_the_scan_series_equals_nilearn_compute_regressor(flashes, hrf):
    """Tolerance: 3% of the peak, from the anti-alias low-pass (about 2% for 0.1 s flashes at TR 2)
    and nilearn's quantisation of 0.1 s events onto its grid (here oversampling=500, under 1%)."""
    result = predict_movie(FakeModel(), flashes, tr=2.0, slice_time_ref=0.5, hrf=hrf, sample_rate_hz=None,
                           show_progress=False, baselines=())
    events = np.vstack([result.sample_times, np.full(600, 1.0 / FPS), result.samples[:, 0]])
    expected, _ = compute_regressor(events, hrf, result.frame_times, oversampling=500)
    expected = expected[:, 0]
    np.testing.assert_allclose(result.frame_times, np.arange(30) * 2.0 + 1.0)
    assert np.abs(result.bold[:, 0] - expected).max() <= 0.03 * expected.max()
    assert np.corrcoef(result.bold[:, 0], expected)[0, 1] > 0.999


def test_tr_grid_is_exact_for_a_ten_minute_video(tmp_path):
    # 10 min at 1 frame/s, 8x8 pixels: 600 frames
    video = flash_video(tmp_path / "ten_min.mp4", 600, 1.0, {100: WHITE})
    result = predict_movie(FakeModel(), video, tr=2.0, slice_time_ref=0.5, sample_rate_hz=1.0, show_progress=False,
                           baselines=())
    assert result.bold.shape == (300, 3) and result.frame_times.shape == (300,)
    np.testing.assert_array_equal(result.frame_times, np.arange(300) * 2.0 + 1.0)
    assert result.metadata["n_scans"] == 300 and result.metadata["tr"] == 2.0
    # the SPM HRF peaks about 5 s after the 100 s flash: at the scan acquired at 105 s
    assert int(np.argmax(result.bold[:, 0])) == 52
    shorter = to_scans(result.sample_times, result.samples, scan_times(140, 2.0, 0.5), 2.0, "spm", hold_s=1.0)
    np.testing.assert_allclose(shorter, result.bold[:140], atol=1e-6)


def test_video_model_clips_are_stamped_at_their_centres(tmp_path):
    video = ramp_video(tmp_path / "ramp.mp4", 40, 4.0)  # 10 s
    model = FakeModel("video", n_frames=3)
    result = predict_movie(model, video, tr=2.0, clip_s=3.0, batch_size=2, show_progress=False, baselines=())
    np.testing.assert_allclose(result.sample_times, [1.5, 3.5, 5.5, 7.5])  # stride = TR
    # each clip is the mean of frames lo + linspace(0, 11, 3) of its 12-frame window
    expected = [np.mean(ramp_level([lo, lo + 5, lo + 11])) / 255 for lo in (0, 8, 16, 24)]
    np.testing.assert_allclose(result.samples[:, 0], expected, atol=0.01)
    assert result.bold.shape == (5, 3) and model.calls == 2


def _run_args(out: Path) -> dict:
    return dict(tr=2.0, hrf="spm", sample_rate_hz=4.0, batch_size=4, show_progress=False,
                output=[out / "pred.h5", out / "pred.nii.gz", out / "pred.tsv"])


def test_killed_run_resumes_to_the_same_output_and_never_leaves_partial_final_files(tmp_path, flashes):
    killed = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from _support import FakeModel
        from berg.movie import predict_movie
        from pathlib import Path
        out = Path({str(killed)!r})
        predict_movie(FakeModel(kill_after=5), {str(flashes)!r}, tr=2.0, hrf="spm", sample_rate_hz=4.0, batch_size=4,
                      show_progress=False, output=[out / "pred.h5", out / "pred.nii.gz", out / "pred.tsv"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert sorted(p.name for p in killed.iterdir()) == [partial_path(killed / "pred.h5").name]
    with h5py.File(partial_path(killed / "pred.h5"), "r") as f:
        assert f.attrs["n_done"] == 20 and not f.attrs["complete"]

    with pytest.raises(ResumeError, match="sample_rate_hz"):
        predict_movie(FakeModel(), flashes, **{**_run_args(killed), "sample_rate_hz": 2.0}, resume=True)
    resumed_model = FakeModel()
    resumed = predict_movie(resumed_model, flashes, **_run_args(killed), resume=True)
    assert resumed_model.seen == 240 - 20  # only the rest of the film was encoded
    whole = predict_movie(FakeModel(), flashes, **_run_args(tmp_path / "whole"))
    np.testing.assert_array_equal(resumed.bold, whole.bold)
    a, b = read_h5(killed / "pred.h5"), read_h5(tmp_path / "whole" / "pred.h5")
    np.testing.assert_array_equal(a["samples"], b["samples"])
    np.testing.assert_array_equal(a["sample_times"], np.arange(240) / 4.0)
    np.testing.assert_array_equal(a["baselines_tr"]["luminance"], b["baselines_tr"]["luminance"])
    assert sorted(p.name for p in killed.iterdir()) == ["pred.h5", "pred.json", "pred.nii.gz", "pred.tsv"]
    shared = json.loads((killed / "pred.json").read_text())  # the image's and the table's sidecar, merged
    assert shared["Columns"][0] == "onset" and shared["SkullStripped"] is True and shared["RepetitionTime"] == 2.0
    assert (killed / "pred.tsv").read_text() == (tmp_path / "whole" / "pred.tsv").read_text()


def test_nifti_tsv_and_h5_outputs(tmp_path, flashes):
    out = tmp_path / "out"
    result = predict_movie(FakeModel(), flashes, tr=1.5, n_scans=37, hrf="glover", show_progress=False,
                           output=[out / "bold.nii", out / "group.nii.gz", out / "pred.tsv", out / "all.hdf5"])
    img = nib.load(out / "bold.nii")
    assert img.shape == (2, 3, 2, 37) and img.get_data_dtype() == np.float32
    assert img.header.get_zooms() == (2.0, 2.0, 2.0, 1.5)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(img.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    data = img.get_fdata(dtype=np.float32)
    for col, (i, j, k) in enumerate([(0, 0, 0), (1, 0, 0), (0, 2, 1)]):
        np.testing.assert_array_equal(data[i, j, k], result.bold[:, col])
    assert np.isnan(data[1, 1, 1]).all() and np.isfinite(data).sum() == 3 * 37

    table = pd.read_csv(out / "pred.tsv", sep="\t")
    assert table.shape == (37, 5) and list(table.columns) == ["onset", "red", "rgb", "brightness", "luminance"]
    np.testing.assert_allclose(table["onset"], result.frame_times, rtol=1e-9)
    np.testing.assert_allclose(table["red"], result.bold[:, 0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(table["rgb"], result.bold.mean(axis=1), rtol=1e-6, atol=1e-9)
    sidecar = json.loads((out / "pred.json").read_text())
    assert sidecar["RepetitionTime"] == 1.5 and sidecar["HRF"] == "glover" and sidecar["NumberOfScans"] == 37
    assert sidecar["EncodingModel"] == "fake-rgb" and sidecar["EncodingModelSubject"] == 1 and "berg_version" in sidecar
    assert not {"subject", "model_id"} & set(sidecar)  # pybids would read "subject" as the entity
    assert set(sidecar["Columns"]) <= set(sidecar)

    stored = read_h5(out / "all.hdf5")
    np.testing.assert_array_equal(stored["bold"], result.bold)
    assert stored["samples"].shape == (120, 3) and stored["metadata"]["hrf"] == "glover"
    assert result.samples is None and sorted(p.name for p in out.iterdir()) == [
        "all.hdf5", "bold.json", "bold.nii", "group.json", "group.nii.gz", "pred.json", "pred.tsv"]
    image_sidecar = json.loads((out / "bold.json").read_text())  # BIDS' keys for a bold derivative
    assert image_sidecar["RepetitionTime"] == 1.5 and image_sidecar["SkullStripped"] is True
    assert image_sidecar["Sources"] == [Path(flashes).resolve().as_uri()] and "Columns" not in image_sidecar


def test_bids_continuous_predictors_have_no_header_and_a_timed_sidecar(tmp_path, flashes):
    result = predict_movie(FakeModel(), flashes, tr=1.5, slice_time_ref=0.5, show_progress=False,
                           output=[tmp_path / "sub-01_task-f_stim.tsv.gz", tmp_path / "run.h5"])
    table = pd.read_csv(tmp_path / "sub-01_task-f_stim.tsv.gz", sep="\t", header=None)
    sidecar = json.loads((tmp_path / "sub-01_task-f_stim.json").read_text())
    assert sidecar["Columns"] == ["red", "rgb", "brightness", "luminance"] and table.shape == (40, 4)
    assert sidecar["SamplingFrequency"] == 1 / 1.5 and sidecar["StartTime"] == 0.75
    np.testing.assert_allclose(table[1], result.bold.mean(axis=1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(table[2], result.baselines_tr["brightness"], rtol=1e-6, atol=1e-9)
    with h5py.File(tmp_path / "run.h5") as h5:  # the voxel of every column is in the file
        np.testing.assert_array_equal(h5["voxel_ijk"][()], [[0, 0, 0], [1, 0, 0], [0, 2, 1]])
        np.testing.assert_array_equal(h5["roi_columns/rgb"][()], [0, 1, 2])


def test_an_roi_named_like_a_baseline_keeps_both_columns(tmp_path, flashes):
    model = FakeModel()
    model.metadata["roi_columns"] = {"brightness": [0], "berg_brightness": [1], "onset": [2]}
    result = predict_movie(model, flashes, tr=2.0, show_progress=False, output=tmp_path / "p.tsv")
    table = pd.read_csv(tmp_path / "p.tsv", sep="\t")
    assert list(table.columns) == ["berg_onset", "brightness", "berg_brightness", "onset", "berg_berg_brightness",
                                   "luminance"]
    np.testing.assert_allclose(table["brightness"], result.bold[:, 0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(table["berg_berg_brightness"], result.baselines_tr["brightness"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(table["berg_onset"], result.frame_times)
    sidecar = json.loads((tmp_path / "p.json").read_text())
    assert sidecar["Columns"] == list(table.columns) and sidecar["berg_onset"]["Units"] == "s"


def test_an_roi_named_like_a_sidecar_field_is_refused(tmp_path, flashes):
    model = FakeModel()
    model.metadata["roi_columns"] = {"Units": [0]}
    with pytest.raises(BergError, match="Units"):
        predict_movie(model, flashes, tr=2.0, show_progress=False, output=tmp_path / "p.tsv")


def test_group_volumes_are_zero_outside_the_model(tmp_path, flashes):
    result = predict_movie(FakeModel(subject="group"), flashes, tr=2.0, show_progress=False, baselines=(),
                           output=tmp_path / "group.nii.gz")
    data = nib.load(tmp_path / "group.nii.gz").get_fdata()
    assert np.count_nonzero(data[1, 1, 1]) == 0 and np.isfinite(data).all()
    assert result.outputs == [tmp_path / "group.nii.gz", tmp_path / "group.json"]


@pytest.mark.parametrize("kwargs, match", [
    ({"tr": -2.0}, "tr"), ({"tr": 2.0, "hrf": "canonical"}, "hrf"), ({"tr": 2.0, "slice_time_ref": 1.5}, "slice_time_ref"),
    ({"tr": 2.0, "n_scans": 0}, "n_scans"), ({"tr": 2.0, "output": "x.csv"}, "file name ending in"),
    ({"tr": 2.0, "resume": True}, "output"), ({"tr": 2.0, "baselines": ["contrast"]}, "contrast"),
    ({"tr": 100.0}, "n_scans"), ({"tr": 2.0, "sample_rate_hz": 0}, "sample_rate_hz"),
])
def test_bad_arguments_raise_typed_errors(flashes, kwargs, match):
    with pytest.raises(BergError, match=match):
        predict_movie(FakeModel(), flashes, show_progress=False, **kwargs)


def test_cli_builds_the_model_and_writes_outputs(tmp_path, flashes, monkeypatch):
    calls = {}

    def fake_get_encoding_model(model_id, **kwargs):
        calls.update(kwargs, model_id=model_id)
        return FakeModel()

    monkeypatch.setattr("berg.api.get_encoding_model", fake_get_encoding_model)
    assert cli_main(["movie", "fake-rgb", "--subject", "2", str(flashes), "--tr", "2", "-o", str(tmp_path / "a.tsv"),
                     "-o", str(tmp_path / "a.h5"), "--hrf", "none", "--roi", "lFFA", "--backbone-weights", "untrained",
                     "--rate", "0", "--quiet"]) == 0
    assert calls == {"model_id": "fake-rgb", "subject": 2, "selection": {"roi": "lFFA"}, "device": "auto",
                     "backbone_weights": None, "verify_hash": True, "berg_dir": None, "sigma_mm": None,
                     "precision": "float32", "channels_last": False, "compile": False}
    stored = read_h5(tmp_path / "a.h5")
    assert stored["samples"].shape == (600, 3) and stored["metadata"]["hrf"] == "none"
    assert len(pd.read_csv(tmp_path / "a.tsv", sep="\t")) == 30


def test_real_encoder_through_the_public_api(tmp_path, tiny_model, berg_dir):
    from berg.video import read_frames

    model = berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)
    video = ramp_video(tmp_path / "ramp.mp4", 40, 10.0, size=(64, 96))  # 4 s
    result = predict_movie(model, video, tr=1.0, sample_rate_hz=2.0, show_progress=False, batch_size=3,
                           output=[tmp_path / "out.nii.gz", tmp_path / "out.tsv"])
    np.testing.assert_allclose(result.sample_times, np.arange(8) / 2.0)
    expected = berg.encode(model, read_frames(video, np.arange(8) * 5))  # the frames shown at 0, 0.5, ... 3.5 s
    np.testing.assert_allclose(result.samples, expected, rtol=1e-4, atol=1e-4)
    img = nib.load(tmp_path / "out.nii.gz")
    assert img.shape == (6, 7, 5, 4) and img.header.get_zooms()[3] == 1.0
    table = pd.read_csv(tmp_path / "out.tsv", sep="\t")
    assert list(table.columns) == ["onset", "lA", "rA", "B", "brightness", "luminance"] and len(table) == 4
    np.testing.assert_allclose(table["B"], result.bold[:, 0::4].mean(axis=1), rtol=1e-5, atol=1e-7)

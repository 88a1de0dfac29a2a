"""The ``berg`` command line: commands, flags reaching the API, exit codes, logging, and a torch-free start."""

import logging
import subprocess
import sys
from importlib import metadata
from types import SimpleNamespace

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import berg.api
import berg.batch.runner
import berg.encoder
import berg.fetch
import berg.movie
from berg.cli import build_parser, main
from berg.errors import UnknownModelError
from _support import FakeModel


@pytest.fixture
def fake_model(monkeypatch):
    """``berg.api.get_encoding_model`` replaced: records its arguments, returns a three-output model."""
    calls = {}

    def fake_get_encoding_model(model_id, **kwargs):
        calls.update(kwargs, model_id=model_id)
        return FakeModel()

    monkeypatch.setattr(berg.api, "get_encoding_model", fake_get_encoding_model)
    return calls


def test_list_and_info(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fmri-bmd-s3d" in out and "fmri-bold5000-resnet18" in out
    assert main(["info", "fmri-bmd-s3d"]) == 0
    assert "features.5.cat" in capsys.readouterr().out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"berg {metadata.version('berg')}"


def test_a_berg_error_exits_1_with_the_reason_and_no_traceback(capsys):
    assert main(["info", "fmri-bmd-s3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("berg: error: model_id='fmri-bmd-s3'") and "Did you mean: fmri-bmd-s3d" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [[], ["nope"], ["encode"], ["info"], ["list", "--bad-flag"],
                                  ["encode", "m", "x.png", "-o", "o.npy", "--subject", "1", "--batch-size", "two"],
                                  ["encode", "m", "x.png", "-o", "o.npy", "--subject", "1", "--precision", "int8"],
                                  ["encode", "m", "x.png", "-o", "o.npy", "--subject", "1", "--roi", "A",
                                   "--voxels", "m.npy"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage: berg" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--debug", "info", "nope"], ["info", "nope", "--debug"]])
def test_debug_raises_the_error(argv):
    with pytest.raises(UnknownModelError, match="'nope' is not in the zoo"):
        main(argv)


def test_exit_codes_of_the_process():
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "berg.cli", *argv], capture_output=True, text=True)

    ok, error, debug, usage = run("list"), run("info", "nope"), run("--debug", "info", "nope"), run("lst")
    assert (ok.returncode, error.returncode, debug.returncode, usage.returncode) == (0, 1, 1, 2)
    assert "Traceback" not in error.stderr and error.stderr.startswith("berg: error:")
    assert "Traceback" in debug.stderr and "UnknownModelError" in debug.stderr
    assert "invalid choice: 'lst'" in usage.stderr


def test_cli_start_does_not_import_torch():
    code = ("import sys; from berg.cli import main; "
            "assert main(['--help']) == 0 and main(['list']) == 0 and main(['info', 'fmri-bold5000-resnet18']) == 0; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')); "
            "assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("flags, shown", [([], ["warning"]), (["-v"], ["info", "warning"]),
                                          (["-vv"], ["debug", "info", "warning"]), (["-q"], []),
                                          (["list", "-v"], ["info", "warning"])])
def test_verbosity_flags_set_the_log_level(flags, shown, monkeypatch, capsys):
    def catalog_that_logs(**kwargs):
        log = logging.getLogger("berg.api")
        log.debug("a debug message")
        log.info("an info message")
        log.warning("a warning message")
        return {}

    monkeypatch.setattr(berg.api, "get_model_catalog", catalog_that_logs)
    argv = flags if "list" in flags else [*flags, "list"]
    before = logging.getLogger("berg").level
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert [level for level in ("debug", "info", "warning") if f"berg: {level.upper()}: a" in err] == shown
    assert logging.getLogger("berg").level == before  # the CLI leaves logging as it found it


def test_every_model_option_reaches_the_api(fake_model, monkeypatch, tmp_path):
    encode_calls = {}

    def fake_encode(model, stimulus, out=None, **options):
        encode_calls.update(options, stimulus=stimulus)
        out[:] = np.arange(out.shape[0] * out.shape[1]).reshape(out.shape)
        return out

    monkeypatch.setattr(berg.encoder, "encode", fake_encode)
    mask = np.array([1, 0, 1, 1], dtype=bool)
    np.save(tmp_path / "mask.npy", mask)
    output = tmp_path / "r.npy"
    assert main(["encode", "any-model", "a.png", "b.png", "-o", str(output), "--subject", "3", "--voxels",
                 str(tmp_path / "mask.npy"), "--device", "cpu", "--backbone-weights", "w.pt", "--no-verify-hash",
                 "--sigma-mm", "2.5", "--precision", "bfloat16", "--channels-last", "--compile", "--berg-dir", "/d",
                 "--batch-size", "7", "--readout-mb", "64", "-q"]) == 0
    selection = fake_model.pop("selection")
    np.testing.assert_array_equal(selection["voxels"], mask)
    assert fake_model == {"model_id": "any-model", "subject": 3, "device": "cpu", "backbone_weights": "w.pt",
                          "verify_hash": False, "berg_dir": "/d", "sigma_mm": 2.5, "precision": "bfloat16",
                          "channels_last": True, "compile": True}
    assert encode_calls == {"stimulus": ["a.png", "b.png"], "batch_size": 7, "readout_mb": 64.0,
                            "show_progress": False}
    np.testing.assert_array_equal(np.load(output), np.arange(6).reshape(2, 3))


def test_defaults_reach_the_api_unchanged(fake_model, monkeypatch, tmp_path):
    encode_calls = {}
    monkeypatch.setattr(berg.encoder, "encode", lambda model, stimulus, out=None, **kw: encode_calls.update(kw))
    assert main(["encode", "any-model", "a.png", "-o", str(tmp_path / "r.npy"), "--subject", "group"]) == 0
    assert fake_model == {"model_id": "any-model", "subject": "group", "selection": None, "device": "auto",
                          "backbone_weights": "default", "verify_hash": True, "berg_dir": None, "sigma_mm": None,
                          "precision": "float32", "channels_last": False, "compile": False}
    assert encode_calls == {"batch_size": None, "show_progress": True}  # readout_mb: the library's default


def test_movie_options_reach_predict_movie(fake_model, monkeypatch, tmp_path):
    calls = {}

    def fake_predict_movie(model, video, **kwargs):
        calls.update(kwargs, video=video)
        return SimpleNamespace(outputs=[])

    monkeypatch.setattr(berg.movie, "predict_movie", fake_predict_movie)
    common = ["movie", "m", "film.mp4", "--subject", "1", "--tr", "1.5", "-o", "a.tsv"]
    assert main([*common, "-o", "a.h5", "--n-scans", "40", "--slice-time-ref", "0.5", "--hrf", "glover",
                 "--rate", "4", "--clip-s", "2", "--stride-s", "0.5", "--batch-size", "3", "--resume",
                 "--baseline", "luminance", "--quiet"]) == 0
    assert calls == {"video": "film.mp4", "tr": 1.5, "n_scans": 40, "slice_time_ref": 0.5, "hrf": "glover",
                     "sample_rate_hz": 4.0, "clip_s": 2.0, "stride_s": 0.5, "batch_size": 3,
                     "output": ["a.tsv", "a.h5"], "resume": True, "show_progress": False, "baselines": ("luminance",)}
    assert main([*common, "--no-baselines"]) == 0
    assert calls["baselines"] == () and calls["show_progress"] is True and calls["hrf"] == "spm"
    calls.clear()
    assert main([*common]) == 0
    assert "baselines" not in calls and calls["output"] == ["a.tsv"]  # predict_movie's default baselines


def test_download_options_reach_the_api(monkeypatch, capsys, tmp_path):
    calls = {}

    def fake_download(model_id, **kwargs):
        calls.update(kwargs, model_id=model_id)
        return [tmp_path / "a", tmp_path / "b"]

    monkeypatch.setattr(berg.fetch, "download", fake_download)
    assert main(["-q", "download", "fmri-bmd-s3d", "--subject", "2", "--subject", "7", "--berg-dir", "/d",
                 "--endpoint-url", "http://h:1"]) == 0
    assert calls == {"model_id": "fmri-bmd-s3d", "subjects": [2, 7], "berg_dir": "/d", "endpoint_url": "http://h:1",
                     "show_progress": False}
    assert capsys.readouterr().out.split() == [str(tmp_path / "a"), str(tmp_path / "b")]


def test_batch_options_reach_the_runner(monkeypatch, tmp_path):
    calls = {}

    def fake_run(job, **kwargs):
        calls.update(kwargs, job=job)
        return berg.batch.runner.BatchResult(output=tmp_path, n_units=2, n_skipped=1, n_done=1)

    monkeypatch.setattr(berg.batch.runner, "run", fake_run)
    assert main(["batch", "job.yaml", "--engine", "ray", "--address", "ray://h:10001", "--actors", "3",
                 "--num-gpus", "0.5", "-q"]) == 0
    assert calls == {"job": "job.yaml", "engine": "ray", "address": "ray://h:10001", "actors": 3, "num_gpus": 0.5,
                     "show_progress": False, "command": "berg batch job.yaml --engine ray --address ray://h:10001 "
                                                        "--actors 3 --num-gpus 0.5 -q", "verify": False}


def test_subject_parses_the_same_way_in_every_command():
    parser = build_parser()
    for subject, expected in [("2", 2), ("group", "group"), ("one", "one")]:
        seen = [parser.parse_args(["encode", "m", "x.png", "-o", "o.npy", "--subject", subject]).subject,
                parser.parse_args(["movie", "m", "v.mp4", "--tr", "1", "-o", "o.tsv", "--subject", subject]).subject,
                parser.parse_args(["download", "m", "--subject", subject]).subjects[0]]
        assert seen == [expected] * 3


def test_unreadable_voxel_mask_is_a_berg_error(fake_model, tmp_path, capsys):
    (tmp_path / "mask.npy").write_text("not an array")
    assert main(["encode", "m", "x.png", "-o", str(tmp_path / "r.npy"), "--subject", "1", "--voxels",
                 str(tmp_path / "mask.npy")]) == 1
    assert "--voxels" in capsys.readouterr().err and not (tmp_path / "r.npy").exists()


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

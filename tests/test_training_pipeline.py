"""Training from dataset specs: bad inputs leave nothing behind; train -> load -> encode reproduces predictions."""

import json
import runpy
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml

import berg
from berg.cards import load_card
from berg.cli import main as cli_main
from berg.errors import MissingFilesError
from berg.training import DatasetError, train

from _support import feature_dataset, files_under, image_dataset


@pytest.fixture
def feature_spec(tmp_path):
    return feature_dataset(tmp_path / "data")


def _edit(spec_path, **changes):
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(changes)
    spec_path.write_text(yaml.safe_dump(spec))


def _fails(spec_path, berg_dir, error, phrase):
    with pytest.raises(error, match=phrase):
        train(spec_path, berg_dir)
    assert files_under(berg_dir) == []


def test_trial_table_with_unknown_stimulus(feature_spec, tmp_path):
    spec, _ = feature_spec
    table = spec.parent / "trials.tsv"
    table.write_text(table.read_text().replace("stim00003", "stim99999"))
    _fails(spec, tmp_path / "berg", DatasetError, "names 1 unknown stimuli, e.g. 'stim99999'")


def test_response_and_trial_counts_differ(feature_spec, tmp_path):
    spec, _ = feature_spec
    table = spec.parent / "trials.tsv"
    table.write_text("".join(table.read_text().splitlines(keepends=True)[:-1]))
    _fails(spec, tmp_path / "berg", DatasetError, r"has \d+ trials but the responses hold \d+ trials")


@pytest.mark.slow  # trains a model
def test_test_stimuli_without_repeats(tmp_path):
    spec, _ = feature_dataset(tmp_path / "data", n_test=10, test_repeats=1)
    _fails(spec, tmp_path / "berg", DatasetError, "none of the 10 test stimuli has repeats")
    _edit(spec, noise_ceiling=False)
    result = train(spec, tmp_path / "berg")
    assert "noise_ceiling" not in result.metrics


def test_missing_file_and_bad_options(feature_spec, tmp_path):
    spec, _ = feature_spec
    _edit(spec, nan_policy="ignore")
    _fails(spec, tmp_path / "berg", DatasetError, "nan_policy='ignore' is not valid: expected one of 'raise', 'drop', 'zero'")
    _edit(spec, nan_policy="raise", trials="nope.tsv")
    _fails(spec, tmp_path / "berg", MissingFilesError, "'nope.tsv' does not exist")


@pytest.mark.parametrize("changes, phrase", [
    ({"fit": {"n_folds": "five"}}, "fit.n_folds='five' is not valid: expected an integer >= 2"),
    ({"fit": {"alphas": ["a", 1.0]}}, r"'fit.alphas' is \['a', 1.0\]; valid: a list of positive numbers"),
    ({"fit": [1, 2]}, r"'fit' is \[1, 2\]; valid: a mapping"),
    ({"stimuli": "stimuli.npy"}, "'stimuli' is 'stimuli.npy'; valid: a mapping"),
    ({"subject": "one"}, "subject='one' is not valid: expected an integer"),
    ({"rois": ["roi-signal.nii.gz"]}, "'rois' is \\['roi-signal.nii.gz'\\]; valid: a mapping"),
    ({"grid": {"shape": [91, 109], "affine": np.eye(4).tolist()}}, "'grid' is .*; valid: shape \\(3 integers\\)"),
    ({"grid": {"shape": [91, 109, 91], "affine": "eye"}}, "'grid' is .*; valid: shape .* and affine \\(4 x 4"),
])
def test_malformed_spec_values(feature_spec, tmp_path, changes, phrase):
    spec, _ = feature_spec
    _edit(spec, **changes)
    _fails(spec, tmp_path / "berg", DatasetError, phrase)


@pytest.mark.parametrize("policy", ["raise", "drop", "zero"])
def test_nan_policy(feature_spec, tmp_path, policy):
    spec, data = feature_spec
    with h5py.File(spec.parent / "responses.h5", "r+") as f:
        values = f["responses"][...]
        values[[3, 7], 5] = np.nan
        values[0, 9] = np.nan
        f["responses"][...] = values
    _edit(spec, nan_policy=policy)
    if policy == "raise":
        _fails(spec, tmp_path / "berg", DatasetError, "3 NaN values in 2 voxels and 3 trials")
        return
    result = train(spec, tmp_path / "berg")
    n_left = 38 if policy == "drop" else 40
    assert result.predictions.shape == (20, n_left)
    meta = json.loads((result.model_dir / "metadata" / "berg_metadata_sub-01.json").read_text())
    assert meta["n_voxels"] == n_left and meta["provenance"]["dropped_voxels"] == 40 - n_left


def test_failure_while_writing_leaves_nothing(feature_spec, tmp_path, monkeypatch):
    spec, _ = feature_spec

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sys.modules["berg.training.train"], "write_report", broken)
    with pytest.raises(OSError, match="disk full"):
        train(spec, tmp_path / "berg")
    assert files_under(tmp_path / "berg") == []


def test_package_and_report(feature_spec, tmp_path):
    spec, data = feature_spec
    result = train(spec, tmp_path / "berg")
    card = load_card(result.card_path)
    assert card.model_id == "fmri-synthetic-resnet18" and card.data["readout"] == {"kind": "scaler-pca-ridge",
                                                                                   "n_components": 8}
    assert card.data["n_voxels"] == {1: 40}
    assert card.data["backbone"]["feature_shapes"] == {"avgpool": [512, 1, 1]}
    report = {p.name for p in result.report_dir.iterdir()}
    assert {"summary.json", "histograms.png", "r_vs_noise_ceiling.png", "glass_brain_r.png"} <= report
    summary = json.loads((result.report_dir / "summary.json").read_text())
    assert summary["rois"]["noise"]["n_voxels"] == int((~data.is_signal).sum())
    assert summary["rois"]["signal"]["correlation"]["median"] > 0.7
    meta = berg.get_model_metadata(result.model_id, subject=1, berg_dir=tmp_path / "berg")
    assert set(meta["accuracy"]) >= {"correlation", "noise_ceiling", "explained_variance"}
    assert "alpha" not in meta["accuracy"] and meta["fitting"]["alpha"].shape == (meta["n_voxels"],)


@pytest.mark.slow  # trains, saves, loads and encodes
def test_train_save_load_encode_reproduces_predictions(tmp_path):
    spec, data, images = image_dataset(tmp_path / "data")
    berg_dir = tmp_path / "berg"
    assert cli_main(["train", str(spec), "--berg-dir", str(berg_dir)]) == 0
    model = berg.get_encoding_model("fmri-synthetic-resnet18", subject=1, berg_dir=berg_dir, backbone_weights=None)
    result = train(spec, berg_dir)  # second run: features come from the cache
    rows = [data.stimulus_ids.index(s) for s in result.test_ids]
    encoded = berg.encode(model, images[rows])
    assert encoded.shape == result.predictions.shape == (12, 30)
    assert np.abs(encoded - result.predictions).max() <= 1e-5
    assert np.abs(result.predictions).max() > 0.1


def test_creation_scripts(tmp_path, monkeypatch, capsys):
    spec, _, _ = image_dataset(tmp_path / "data", n_train=20, n_test=6, n_voxels=5)
    scripts = Path(__file__).resolve().parents[1] / "creation_code"

    def run(name, *args):
        monkeypatch.setattr(sys, "argv", [name, *args, "--berg-dir", str(tmp_path / "berg")])
        try:
            runpy.run_path(str(scripts / name), run_name="__main__")
        except SystemExit as exc:
            assert exc.code == 0
        return json.loads(capsys.readouterr().out)

    prepared = run("01_prepare_data.py", str(spec))
    assert prepared["n_train"] == 20 and prepared["features"] == {"avgpool": [512, 1, 1]}
    trained = run("02_train_encoding_models.py", str(spec))
    tested = run("03_test_encoding_models.py", str(spec), trained["model_id"], "--untrained-backbone")
    assert tested["all"]["correlation"]["median"] == pytest.approx(trained["median_correlation"], abs=1e-5)


def test_nifti_responses_train_like_hdf5(feature_spec, tmp_path):
    spec, _ = feature_spec
    from_hdf5 = train(spec, tmp_path / "berg-h5")
    with h5py.File(spec.parent / "responses.h5") as f:
        trials = f["responses"][...]
    mask = np.zeros((4, 4, 4), dtype=np.uint8)
    mask.reshape(-1)[:40] = 1  # the same voxels, in C order
    bold = np.zeros((4, 4, 4, len(trials)), dtype=np.float32)
    bold[mask > 0] = trials.T
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(bold, affine), str(spec.parent / "bold.nii.gz"))
    nib.save(nib.Nifti1Image(mask, affine), str(spec.parent / "mask.nii.gz"))
    raw = yaml.safe_load(spec.read_text())
    for key in ("grid", "rois", "space"):
        raw.pop(key)
    raw["responses"] = {"kind": "nifti", "path": "bold.nii.gz", "mask": "mask.nii.gz"}
    spec.write_text(yaml.safe_dump(raw))
    from_nifti = train(spec, tmp_path / "berg-nii")
    np.testing.assert_allclose(from_nifti.predictions, from_hdf5.predictions, atol=1e-6)
    meta = json.loads((from_nifti.model_dir / "metadata" / "berg_metadata_sub-01.json").read_text())
    assert meta["volume_shape"] == [4, 4, 4] and meta["affine"][0][0] == 3.0 and meta["space"] == "subject"
    assert not (from_nifti.report_dir / "glass_brain_r.png").exists()


@pytest.mark.slow  # trains on ResNet-18 features of image files
def test_image_files_train_like_an_array(tmp_path):
    from PIL import Image

    spec, data, images = image_dataset(tmp_path / "data", n_train=16, n_test=6, n_voxels=5)
    from_array = train(spec, tmp_path / "berg")
    files = []
    for sid, img in zip(data.stimulus_ids, images):
        Image.fromarray(img.transpose(1, 2, 0)).save(spec.parent / f"{sid}.png")
        files.append(f"{sid}.png")
    _edit(spec, stimuli={"kind": "images", "files": files})
    from_files = train(spec, tmp_path / "berg")
    np.testing.assert_allclose(from_files.predictions, from_array.predictions, atol=1e-5)
    _edit(spec, stimuli={"kind": "videos", "files": files})
    _fails(spec, tmp_path / "berg2", DatasetError, "'stimuli.kind' is 'videos' but template")

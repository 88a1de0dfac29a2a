"""Every bad input gets a typed error naming the parameter, what was given and what is valid."""

import numpy as np
import pytest
import torch

import berg
from berg import errors
from berg.cli import main as cli_main


def _model(berg_dir, **kw):
    return berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None,
                                   berg_dir=berg_dir, **kw)


def test_unknown_model_with_close_matches(berg_dir):
    with pytest.raises(errors.UnknownModelError, match=r"'fmri-bold5000-resnet' .*Did you mean: fmri-bold5000-resnet18"):
        berg.get_encoding_model("fmri-bold5000-resnet", subject=1, berg_dir=berg_dir)


@pytest.mark.parametrize("subject", [0, 11, "3", True, "groop"])
def test_subject_out_of_range(berg_dir, subject):
    with pytest.raises(errors.InvalidSubjectError, match=r"valid subjects are 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"):
        berg.get_model_metadata("fmri-bmd-s3d", subject=subject, berg_dir=berg_dir)


def test_unknown_roi_with_close_matches(tiny_model, berg_dir):
    with pytest.raises(errors.InvalidSelectionError, match=r"'la' is not an ROI.*Did you mean: lA.*Valid ROIs: lA, rA, B"):
        _model(berg_dir, selection={"roi": "la"})


def test_unknown_selection_key(tiny_model, berg_dir):
    with pytest.raises(errors.InvalidSelectionError, match=r"unknown key\(s\) \['roii'\]; valid keys for a volume model: 'roi', 'voxels'"):
        _model(berg_dir, selection={"roii": "lA"})


@pytest.mark.parametrize("mask, phrase", [
    (np.ones(59), r"shape \(59,\); it must be a binary vector of length 60"),
    (np.full(60, 2), r"must be binary"),
    (np.zeros(60), r"selects nothing"),
], ids=["wrong-length", "non-binary", "all-zeros"])
def test_bad_voxel_masks(tiny_model, berg_dir, mask, phrase):
    with pytest.raises(errors.InvalidSelectionError, match=phrase):
        _model(berg_dir, selection={"voxels": mask})


@pytest.fixture(scope="module")
def model(shared_tiny_model):
    return _model(shared_tiny_model["berg_dir"])


@pytest.mark.parametrize("stimulus, phrase", [
    (np.zeros((8, 8, 3), np.uint8), r"shape \(8, 8, 3\); a image model expects \(batch, 3, H, W\).*add a batch axis"),
    (np.zeros((1, 1, 8, 8, 3), np.uint8), r"expects \(batch, 3, H, W\) or \(batch, H, W, 3\)"),
    (np.zeros((2, 4, 8, 8), np.uint8), r"no colour axis of size 3"),
    (np.zeros((0, 8, 8, 3), np.uint8), r"empty batch"),
    ([], r"empty list"),
    (np.full((1, 8, 8, 3), np.nan), r"NaN or inf"),
    (np.full((1, 8, 8, 3), np.inf), r"NaN or inf"),
    (np.full((1, 8, 8, 3), 1.5), r"floats must lie in \[0, 1\]"),
    (np.full((1, 8, 8, 3), 256, np.int64), r"integers must lie in 0..255"),
    (np.full((1, 8, 8, 3), -1, np.int32), r"integers must lie in 0..255"),
    (np.ones((1, 8, 8, 3), bool), r"dtype bool"),
    ("missing.png", r"does not exist"),
    (["clip.mp4"], r"names video files, but this is an image model"),
], ids=["ndim-single-image", "ndim-video-array", "channels", "empty-batch", "empty-list", "nan", "inf",
        "float-range", "int-high", "int-negative", "bool", "missing-file", "video-for-image-model"])
def test_bad_stimuli(model, stimulus, phrase):
    with pytest.raises(errors.InvalidStimulusError, match=phrase):
        berg.encode(model, stimulus)


def test_unreadable_image_file(model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(errors.InvalidStimulusError, match=r"broken.jpg' cannot be read"):
        berg.encode(model, [str(bad)])


def test_unreadable_video_file(tmp_path):
    from berg.stimuli import as_stimulus_set

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(errors.InvalidStimulusError, match="broken.mp4"):
        as_stimulus_set([str(bad)], "video", 14)


def test_cuda_without_cuda(tiny_model, berg_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # runs the same on a machine with a GPU
    with pytest.raises(errors.InvalidDeviceError, match=r"device='cuda' was requested but CUDA is not available"):
        berg.get_encoding_model("test-resnet18", subject=1, device="cuda", backbone_weights=None, berg_dir=berg_dir)
    with pytest.raises(errors.InvalidDeviceError, match=r"device='tpu' is not valid"):
        berg.get_encoding_model("test-resnet18", subject=1, device="tpu", backbone_weights=None, berg_dir=berg_dir)


def test_missing_model_files_say_which_and_how(tiny_model, berg_dir, monkeypatch):
    monkeypatch.setenv("BERG_OFFLINE", "1")
    with pytest.raises(errors.OfflineError, match=r"(?s)weights_sub-02.npy.*BERG_OFFLINE.*berg download fmri-bmd-s3d"):
        berg.get_encoding_model("fmri-bmd-s3d", subject=2, backbone_weights=None, device="cpu", berg_dir=berg_dir)
    (tiny_model["model_dir"] / "encoding_models_weights" / "berg_readout_sub-02.safetensors").unlink()
    with pytest.raises(errors.MissingFilesError, match=r"(?s)berg_readout_sub-02.safetensors.*berg download"):
        berg.get_encoding_model("test-resnet18", subject=2, backbone_weights=None, device="cpu", berg_dir=berg_dir)


def test_default_weights_offline_names_file_folder_and_url(tiny_model, berg_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("BERG_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(errors.BackboneWeightsError) as info:
        berg.get_encoding_model("test-resnet18", subject=1, device="cpu", berg_dir=berg_dir)
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_cli_error_writes_nothing(tiny_model, berg_dir, tmp_path, capsys):
    out = tmp_path / "out.npy"
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((2, 8, 8, 3), 300, np.int64))
    code = cli_main(["encode", "test-resnet18", "--subject", "1", str(bad), "-o", str(out), "--backbone-weights",
                     "untrained", "--device", "cpu", "--berg-dir", str(berg_dir), "--quiet"])
    assert code == 1
    assert "integers must lie in 0..255" in capsys.readouterr().err
    assert list(tmp_path.glob("out*")) == []


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_bad_batch_size(model, images, batch_size):
    with pytest.raises(errors.InvalidArgumentError, match=rf"batch_size={batch_size!r} is not valid"):
        berg.encode(model, images, batch_size=batch_size)


def test_cli_unknown_output_extension(tiny_model, berg_dir, tmp_path, capsys):
    code = cli_main(["encode", "test-resnet18", "--subject", "1", "x.png", "-o", str(tmp_path / "out.csv"),
                     "--berg-dir", str(berg_dir)])
    err = capsys.readouterr().err
    assert code == 1 and "-o=" in err and "expected a file name ending in" in err and ".npy" in err


def test_encode_needs_an_encoding_model(images):
    with pytest.raises(errors.InvalidArgumentError, match=r"model=str is not valid: pass an EncodingModel"):
        berg.encode("test-resnet18", images)


def test_to_nifti_shape_mismatch(model, images):
    responses, metadata = berg.encode(model, images, return_metadata=True)
    with pytest.raises(errors.InvalidArgumentError, match=r"responses have shape"):
        berg.to_nifti(responses[:, :-1], metadata)


def test_fold_node_dims_mismatch():
    from berg.readout import fold_scaler_projection

    with pytest.raises(errors.InvalidArgumentError, match=r"node_dims add up to 5"):
        fold_scaler_projection(np.ones((2, 6)), np.zeros(6), np.ones(6), {"a": 5})


def test_cli_subject_that_is_not_a_number(tiny_model, berg_dir, tmp_path, capsys):
    code = cli_main(["encode", "test-resnet18", "--subject", "one", "x.png", "-o", str(tmp_path / "out.npy"),
                     "--berg-dir", str(berg_dir)])
    assert code == 1 and "subject='one' is not valid" in capsys.readouterr().err


def test_damaged_readout_file(tiny_model, berg_dir):
    from berg.registry import get_card
    from berg.storage.native import readout_path

    path = readout_path(berg_dir / get_card("test-resnet18", berg_dir).folder, 1)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(errors.ModelFormatError, match="cannot read model file"):
        _model(berg_dir)


def test_every_error_class_lives_in_errors_and_derives_from_berg_error():
    import importlib
    import pkgutil

    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(berg.__path__, "berg.")
               if not m.name.endswith(".__main__")]  # running a command is not importing a module
    defined = {(cls.__module__, cls.__name__) for module in modules for cls in vars(module).values()
               if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__.startswith("berg")}
    assert len(modules) > 40 and ("berg.errors", "DatasetError") in defined
    assert {module for module, _ in defined} == {"berg.errors"}
    assert all(issubclass(getattr(errors, name), errors.BergError) for _, name in defined)

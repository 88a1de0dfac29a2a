"""The shared argument checks: one behaviour for bools, numpy scalars and strings, one message form."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from _support import FakeModel, flash_video, write_test_model

import berg
from berg import validation
from berg.errors import BergError, InvalidArgumentError, InvalidDataError
from berg.movie import predict_movie
from berg.video import iter_frames, read_frames


def _message(name, value, expected):
    return re.escape(f"{name}={value!r} is not valid: expected {expected}.")


# (check, keyword arguments, value given, normalised result or the "expected ..." text of the error)
ACCEPTED = [
    (validation.positive_number, {}, 2, 2.0),
    (validation.positive_number, {}, 0.5, 0.5),
    (validation.positive_number, {}, np.int64(3), 3.0),
    (validation.positive_number, {}, np.float32(0.25), 0.25),
    (validation.positive_number, {"allow_zero": True}, 0, 0.0),
    (validation.positive_number, {"allow_none": True}, None, None),
    (validation.number, {"minimum": -1, "maximum": 1}, -1, -1.0),
    (validation.number, {}, np.float64(-7.5), -7.5),
    (validation.integer, {"minimum": 1}, 4, 4),
    (validation.integer, {"minimum": 1}, np.int64(2), 2),
    (validation.integer, {"minimum": 0}, np.uint8(0), 0),
    (validation.integer, {"allow_none": True}, None, None),
    (validation.probability, {}, 0, 0.0),
    (validation.probability, {}, np.float32(1.0), 1.0),
    (validation.flag, {}, np.bool_(True), True),
    (validation.flag, {}, False, False),
]

REFUSED = [
    (validation.positive_number, {}, True, "a finite number > 0"),
    (validation.positive_number, {}, np.bool_(False), "a finite number > 0"),
    (validation.positive_number, {}, "2", "a finite number > 0"),
    (validation.positive_number, {}, float("nan"), "a finite number > 0"),
    (validation.positive_number, {}, float("inf"), "a finite number > 0"),
    (validation.positive_number, {}, np.float64(-np.inf), "a finite number > 0"),
    (validation.positive_number, {}, 0, "a finite number > 0"),
    (validation.positive_number, {}, -1, "a finite number > 0"),
    (validation.positive_number, {}, None, "a finite number > 0"),
    (validation.positive_number, {}, [2], "a finite number > 0"),
    (validation.positive_number, {}, 10**400, "a finite number > 0"),
    (validation.positive_number, {"allow_zero": True}, -0.1, "a finite number >= 0"),
    (validation.positive_number, {"allow_none": True, "unit": "s"}, "2", "a finite number > 0 (s), or None"),
    (validation.number, {"minimum": 0, "maximum": 2}, 2.5, "a finite number in [0, 2]"),
    (validation.number, {"maximum": 2}, float("nan"), "a finite number <= 2"),
    (validation.integer, {"minimum": 1}, True, "an integer >= 1"),
    (validation.integer, {"minimum": 1}, "2", "an integer >= 1"),
    (validation.integer, {"minimum": 1}, 2.0, "an integer >= 1"),
    (validation.integer, {"minimum": 1}, np.float64(2.0), "an integer >= 1"),
    (validation.integer, {"minimum": 1}, 0, "an integer >= 1"),
    (validation.integer, {"minimum": 1}, np.int32(-3), "an integer >= 1"),
    (validation.integer, {"minimum": 1}, None, "an integer >= 1"),
    (validation.integer, {"minimum": 1, "allow_none": True}, False, "an integer >= 1, or None"),
    (validation.integer, {"maximum": 9}, 10, "an integer <= 9"),
    (validation.probability, {}, 1.5, "a finite number in [0, 1]"),
    (validation.probability, {}, -0.01, "a finite number in [0, 1]"),
    (validation.probability, {}, True, "a finite number in [0, 1]"),
    (validation.probability, {}, "0.5", "a finite number in [0, 1]"),
    (validation.probability, {}, float("nan"), "a finite number in [0, 1]"),
    (validation.flag, {}, 1, "True or False"),
    (validation.flag, {}, "yes", "True or False"),
    (validation.flag, {}, None, "True or False"),
]


@pytest.mark.parametrize("check, kwargs, value, result", ACCEPTED)
def test_accepted_values_come_back_as_python_values(check, kwargs, value, result):
    out = check("x", value, **kwargs)
    assert out == result
    assert type(out) is type(result)  # numpy scalars are normalised to int / float / bool


@pytest.mark.parametrize("check, kwargs, value, expected", REFUSED)
def test_refused_values_name_parameter_value_and_what_is_valid(check, kwargs, value, expected):
    with pytest.raises(InvalidArgumentError, match="^" + _message("the_name", value, expected) + "$"):
        check("the_name", value, **kwargs)


def test_a_more_specific_error_type_can_be_asked_for():
    with pytest.raises(InvalidDataError, match=_message("tr", "2", "a finite number > 0")):
        validation.positive_number("tr", "2", error=InvalidDataError)


@pytest.mark.parametrize("value", ["spm", "glover", None])
def test_choice_accepts_each_valid_value(value):
    assert validation.choice("hrf", value, ("spm", "glover", None)) == value


@pytest.mark.parametrize("value, hint", [("spn", " Did you mean: spm?"), ("SPM", ""), (0, ""), (True, "")])
def test_choice_refuses_other_values_and_suggests_close_names(value, hint):
    expected = re.escape(f"hrf={value!r} is not valid: expected one of 'spm', 'glover', None.{hint}") + "$"
    with pytest.raises(InvalidArgumentError, match=expected):
        validation.choice("hrf", value, ("spm", "glover", None))


@pytest.mark.parametrize("value, valid", [(True, (1, 2)), (1, (True, False)), ("1", (1, 2)), (1, ("1", "2"))])
def test_choice_never_matches_across_bool_number_and_string(value, valid):
    with pytest.raises(InvalidArgumentError, match=re.escape(f"x={value!r} is not valid")):
        validation.choice("x", value, valid)


def test_existing_path(tmp_path):
    file = tmp_path / "a.txt"
    file.write_text("a")
    assert validation.existing_path("spec", str(file)) == file
    assert validation.existing_path("folder", tmp_path, kind="dir") == tmp_path
    for value, kind, found in [(tmp_path, "file", "a folder"), (file, "dir", "a file"),
                               (tmp_path / "missing", "file", "nothing there")]:
        with pytest.raises(InvalidArgumentError, match=re.escape(f"spec={str(value)!r} is not valid: expected a path "
                                                                 f"to an existing {'file' if kind == 'file' else 'folder'}; "
                                                                 f"found {found}.")):
            validation.existing_path("spec", value, kind=kind)
    for value in [3, None, "", b"a.txt"]:
        with pytest.raises(InvalidArgumentError, match=_message("spec", value, "a path to an existing file")):
            validation.existing_path("spec", value)


def test_every_refusal_is_a_berg_error_and_a_value_error():
    for check, kwargs, value, _ in REFUSED:
        with pytest.raises(BergError) as info:
            check("x", value, **kwargs)
        assert isinstance(info.value, ValueError)


# ---- the same rules through the public functions -----------------------------------------------------------------

@pytest.fixture(scope="module")
def short_film(tmp_path_factory) -> Path:
    """2 s at 10 frames/s, 8x8; frame i has grey level 10 * i."""
    return flash_video(tmp_path_factory.mktemp("film") / "film.mp4", 20, 10.0,
                       {i: (10 * i,) * 3 for i in range(20)})


@pytest.mark.parametrize("rate", ["2", True, float("nan"), 0])
def test_video_refuses_a_rate_that_is_not_a_positive_number(short_film, rate):
    with pytest.raises(InvalidArgumentError, match=_message("rate_hz", rate, "a finite number > 0 (Hz), or None")):
        iter_frames(short_film, rate_hz=rate)  # refused at the call, before any frame is decoded


def test_video_takes_a_numpy_rate_like_a_python_one(short_film):
    python = [t for t, _ in iter_frames(short_film, rate_hz=4)]
    numpy = [t for t, _ in iter_frames(short_film, rate_hz=np.float32(4.0))]
    assert numpy == python == [j / 4 for j in range(8)]


@pytest.mark.parametrize("indices", [[], [1.5], ["1"], [-1, 2], [True]])
def test_read_frames_refuses_indices_that_are_not_frame_numbers(short_film, indices):
    with pytest.raises(InvalidArgumentError, match=_message("indices", indices, "a non-empty sequence of integer "
                                                                               "frame indices >= 0")):
        read_frames(short_film, indices)


def test_read_frames_takes_numpy_integers(short_film):
    frames = read_frames(short_film, [np.int64(3), np.uint8(0)])
    assert frames.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(frames.reshape(2, -1).mean(axis=1), [30, 0], atol=4)


@pytest.mark.parametrize("batch_size", [True, "2", 2.0])
def test_predict_movie_refuses_bool_str_and_float_batch_sizes(short_film, batch_size):
    with pytest.raises(InvalidArgumentError, match=_message("batch_size", batch_size, "an integer >= 1, or None")):
        predict_movie(FakeModel(), short_film, tr=1.0, batch_size=batch_size, show_progress=False)


def test_predict_movie_takes_a_numpy_integer_batch_size(short_film):
    runs = {}
    for batch_size in (np.int64(2), 20):
        model = FakeModel()
        result = predict_movie(model, short_film, tr=1.0, hrf=None, sample_rate_hz=None, batch_size=batch_size,
                               show_progress=False, baselines=())
        runs[batch_size] = (model.calls, result.bold)
    assert runs[np.int64(2)][0] == 10 and runs[20][0] == 1  # 20 frames in batches of 2, then of 20
    np.testing.assert_allclose(runs[np.int64(2)][1], runs[20][1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    berg_dir = tmp_path_factory.mktemp("berg_dir")
    write_test_model(berg_dir)
    return berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)


@pytest.fixture(scope="module")
def small_images():
    return np.random.default_rng(2).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("batch_size", [True, "2", 2.0])
def test_encode_refuses_bool_str_and_float_batch_sizes_like_predict_movie(model, small_images, batch_size):
    with pytest.raises(InvalidArgumentError, match=_message("batch_size", batch_size, "an integer >= 1, or None")):
        berg.encode(model, small_images, batch_size=batch_size)


def test_encode_takes_a_numpy_integer_batch_size(model, small_images):
    in_twos = berg.encode(model, small_images, batch_size=np.int64(2))
    at_once = berg.encode(model, small_images, batch_size=3)
    assert in_twos.shape == (3, 60) and np.isfinite(in_twos).all()
    np.testing.assert_allclose(in_twos, at_once, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flag", ["return_metadata", "show_progress"])
def test_encode_flags_are_true_or_false(model, small_images, flag):
    with pytest.raises(InvalidArgumentError, match=_message(flag, 1, "True or False")):
        berg.encode(model, small_images, **{flag: 1})


@pytest.mark.parametrize("flag", ["resume", "show_progress"])
def test_predict_movie_flags_are_true_or_false(short_film, flag):
    with pytest.raises(InvalidArgumentError, match=_message(flag, "no", "True or False")):
        predict_movie(FakeModel(), short_film, tr=1.0, **{"show_progress": False, flag: "no"})


@pytest.mark.parametrize("readout_mb", ["64", True, math.nan, 0])
def test_encode_refuses_a_bad_readout_bound_in_the_same_form(model, small_images, readout_mb):
    with pytest.raises(InvalidArgumentError, match=_message("readout_mb", readout_mb, "a finite number > 0 (MiB)")):
        berg.encode(model, small_images, readout_mb=readout_mb)


@pytest.mark.parametrize("option, expected", [
    ({"precision": "float8"}, "precision='float8' is not valid: expected one of 'float32', 'bfloat16', 'float16'. "
                              "Did you mean: float32, float16, bfloat16?"),
    ({"device": "tpu"}, "device='tpu' is not valid: expected 'auto', 'cpu', 'cuda' or 'cuda:N'."),
    ({"sigma_mm": 2.0},
     "sigma_mm=2.0 is not valid for subject=1: expected None (sigma_mm applies to subject='group' only)."),
    ({"sigma_mm": "2"}, "sigma_mm='2' is not valid: expected a finite number >= 0 (mm), or None."),
    ({"compile": "yes"}, "compile='yes' is not valid: expected True or False."),
])
def test_loading_options_are_checked_before_any_file_is_needed(tmp_path, option, expected):
    write_test_model(tmp_path)
    assert list((tmp_path / "encoding_models").rglob("*readout_sub-01*"))
    for readout in (tmp_path / "encoding_models").rglob("*readout_sub-01*"):
        readout.unlink()  # loading would fail with MissingFilesError if the options were checked later
    with pytest.raises(BergError, match="^" + re.escape(expected) + "$"):
        berg.get_encoding_model("test-resnet18", subject=1, backbone_weights=None, berg_dir=tmp_path,
                                **{"device": "cpu", **option})


@pytest.mark.parametrize("sigma", [-1.0, math.nan, "wide", True])
def test_a_bad_group_sigma_is_an_argument_error_raised_before_any_fetch(tmp_path, monkeypatch, sigma):
    monkeypatch.setenv("BERG_OFFLINE", "1")  # a valid sigma gets past the checks and fails later, on missing files
    with pytest.raises(InvalidArgumentError, match=_message("sigma_mm", sigma, "a finite number >= 0 (mm), or None")):
        berg.get_encoding_model("fmri-bold5000-resnet18", subject="group", sigma_mm=sigma, device="cpu",
                                berg_dir=tmp_path)

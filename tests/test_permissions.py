"""A berg_dir shared by a lab: every file berg writes honours the process umask (0644 under umask 022)."""

from __future__ import annotations

import os
import stat

import pytest

from berg.movie import predict_movie
from berg.storage.img2fmri import import_img2fmri
from berg.storage.legacy import convert_bmd_legacy
from berg.training import train
from _berg_producer import write_berg_tree
from _support import FakeModel, feature_dataset, flash_video, tiny_card


@pytest.fixture()
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(folder):
    """{relative path: permission bits} of every file under ``folder``."""
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


def _assert_shared(folder, source_files=()):
    modes = {k: v for k, v in _modes(folder).items() if k not in source_files}
    assert modes, f"nothing written under {folder}"
    assert {k: v for k, v in modes.items() if v != 0o644} == {}
    folders = [p for p in folder.rglob("*") if p.is_dir()]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o755 for p in folders)


def test_converted_bmd_files(tmp_path, umask_022):
    card = tiny_card()
    files = write_berg_tree(tmp_path / "model", card, [1], tmp_path / "bmd")
    convert_bmd_legacy(tmp_path / "model", card, 1)
    _assert_shared(tmp_path / "model", source_files=files)


@pytest.mark.slow  # a full img2fmri import, warp included
def test_imported_img2fmri_model(img2fmri_wheel, tmp_path, umask_022):
    _assert_shared(import_img2fmri(tmp_path / "berg", wheel=img2fmri_wheel))


@pytest.mark.slow  # trains a model
def test_trained_model(tmp_path, umask_022):
    spec, _ = feature_dataset(tmp_path / "data")
    train(spec, tmp_path / "berg")
    _assert_shared(tmp_path / "berg")


def test_movie_outputs(tmp_path, umask_022):
    film = flash_video(tmp_path / "film.mp4", 40, 10.0, {5: (255, 0, 0)})
    out = tmp_path / "out"
    predict_movie(FakeModel(), film, tr=1.0, hrf=None, sample_rate_hz=None, show_progress=False,
                  output=[out / "p.nii.gz", out / "p.h5", out / "p.tsv"])
    _assert_shared(out)

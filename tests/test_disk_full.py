"""Outputs that would not fit are refused before they are written: a file-size limit (``ulimit -f``) or too little
free space gives each unit a DiskSpaceError in the failures table, exit status 1 and no temporaries; a re-run with
room completes the job."""

import errno
import resource
import subprocess
import sys

import numpy as np
import pytest
import yaml
from _support import FakeModel, job_dict, make_assets, ramp_video

import berg
import berg.batch
from berg.errors import DiskSpaceError


@pytest.fixture(scope="module")
def job_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("full")
    make_assets(folder)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job_dict(folder, folder / "out")))
    return path


def _hidden(root):
    return [p for p in root.rglob(".*") if p.name not in (".bidsignore",)]


def test_a_file_size_limit_is_recorded_per_unit_and_a_rerun_completes(job_file):
    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    script = "import sys; from berg.cli import main; sys.exit(main(['-q', 'batch', sys.argv[1]]))"
    done = subprocess.run([sys.executable, "-c", script, str(job_file)], preexec_fn=limited, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]  # not a crash (a segfault is -11)
    out = job_file.parent / "out"
    rows = (out / "logs" / "failures.tsv").read_text().splitlines()[1:]
    assert len(rows) == 8 and all(r.split("\t")[3] == "DiskSpaceError" for r in rows)
    assert all("ulimit -f" in r for r in rows) and _hidden(out) == []
    result = berg.batch.run(job_file, show_progress=False)
    assert result.ok and result.n_done == 8 and _hidden(out) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10_000))
    film = ramp_video(tmp_path / "f.mp4", 40, 10.0)
    with pytest.raises(DiskSpaceError, match="which has 10,000 free") as caught:
        berg.predict_movie(FakeModel(), film, tr=1.0, show_progress=False, output=tmp_path / "out" / "p.nii.gz")
    assert caught.value.errno == errno.ENOSPC and not (tmp_path / "out").exists()
    monkeypatch.undo()
    result = berg.predict_movie(FakeModel(), film, tr=1.0, show_progress=False, output=tmp_path / "out" / "p.nii.gz")
    assert np.isfinite(result.bold).all() and (tmp_path / "out" / "p.nii.gz").is_file()

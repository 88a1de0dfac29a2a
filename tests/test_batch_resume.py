"""Resuming a batch job costs a directory listing: finished units are recognised by their outputs' size and mtime
and their inputs' identity, without reading any output; --verify re-hashes; changed outputs, stimuli and model
files are redone."""

import os
import shutil

import numpy as np
import pytest
from _support import job_dict, make_assets, read_outputs, units_run

import berg.batch
from berg.batch import records
from berg.cli import main
from berg.storage.native import load_arrays, readout_path, save_arrays


@pytest.fixture()
def finished(tmp_path_factory):
    """A finished run of the two-film, five-photo job (copied per test, so each may damage it)."""
    folder = tmp_path_factory.mktemp("resume")
    files = make_assets(folder)
    out = folder / "out"
    assert berg.batch.run(job_dict(folder, out), show_progress=False).ok
    return folder, out, files


def test_a_rerun_reads_no_output(finished, monkeypatch):
    folder, out, _ = finished
    ran = units_run(monkeypatch)

    def no_hashing(path):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(records, "sha256_file", no_hashing)
    again = berg.batch.run(job_dict(folder, out), show_progress=False)
    assert (again.n_skipped, again.n_done, ran) == (8, 0, [])


def test_an_output_changed_in_place_is_found_by_verify(finished, monkeypatch):
    folder, out, _ = finished
    ran = units_run(monkeypatch)
    shard = next((out / "sub-02" / "func").glob("*chunk-001*"))
    stat = shard.stat()
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes, the old mtime put back
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert berg.batch.run(job_dict(folder, out), show_progress=False).n_done == 0  # size and mtime match
    assert main(["-q", "batch", str(_job_file(folder, out)), "--verify"]) == 0
    assert ran == ["sub-02_task-photos_chunk-001_desc-testresnet18"]


def _job_file(folder, out):
    import yaml

    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job_dict(folder, out)))
    return path


def test_changed_stimuli_and_model_files_are_redone(finished, monkeypatch):
    folder, out, files = finished
    before = read_outputs(out)
    ran = units_run(monkeypatch)
    photo = files["photos"][0]
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    berg.batch.run(job_dict(folder, out), show_progress=False)
    assert sorted(ran) == ["sub-01_task-photos_chunk-000_desc-testresnet18",
                           "sub-02_task-photos_chunk-000_desc-testresnet18"]

    ran.clear()  # the readout of subject 2 replaced in place with other weights
    model_dir = next(p.parent.parent for p in (folder / "berg_dir").rglob("berg_readout_sub-02.safetensors"))
    arrays = load_arrays(readout_path(model_dir, 2))
    save_arrays(readout_path(model_dir, 2), {k: v * 2 for k, v in arrays.items()})
    berg.batch.run(job_dict(folder, out), show_progress=False)
    assert sorted(ran) == [f"sub-02_task-photos_chunk-00{i}_desc-testresnet18" for i in range(3)]
    after = read_outputs(out)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert sorted(changed) == sorted(k for k in before if k.startswith("sub-02"))
    shutil.rmtree(out / "logs" / "units")  # and without records, everything is redone
    assert berg.batch.run(job_dict(folder, out), show_progress=False).n_done == 8


@pytest.mark.slow  # 200 units: 100 one-image shards x 2 subjects
def test_a_rerun_of_200_finished_units_reads_no_output(tmp_path, monkeypatch, capsys):
    import time

    from PIL import Image

    from _support import write_test_model

    write_test_model(tmp_path / "berg_dir", model_id="test-resnet18")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(100):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(photos / f"p{i:03d}.png")
    job = {"output": str(tmp_path / "out"), "berg_dir": str(tmp_path / "berg_dir"), "rows": [
        {"stimuli": str(photos), "model": "test-resnet18", "subjects": [1, 2], "shard_size": 1, "device": "cpu",
         "backbone_weights": "untrained"}]}
    first = berg.batch.run(job, show_progress=False)
    assert first.ok and first.n_units == first.n_done == 200

    def no_hashing(path):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(records, "sha256_file", no_hashing)
    ran = units_run(monkeypatch)
    started = time.perf_counter()
    again = berg.batch.run(job, show_progress=False)
    elapsed = time.perf_counter() - started
    assert (again.n_skipped, again.n_done, ran) == (200, 0, [])
    with capsys.disabled():
        print(f"\nre-run of a finished 200-unit job: {elapsed:.2f} s, no output read")

"""Batch jobs on the local engine: same answer as direct calls, resume after SIGKILL, failures, bad job files."""

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from _support import FILMS, MODEL, job_dict, make_assets, read_outputs, units_run

import berg
import berg.batch
from berg.cli import main
from berg.errors import JobError, OptionalDependencyError


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    return folder, make_assets(folder)


@pytest.fixture(scope="module")
def local_run(assets, tmp_path_factory):
    folder, _ = assets
    out = tmp_path_factory.mktemp("local") / "out"
    result = berg.batch.run(job_dict(folder, out), show_progress=False)
    return out, result


def _model(files, subject):
    return berg.get_encoding_model(MODEL, subject=subject, device="cpu", backbone_weights=None,
                                   berg_dir=files["berg_dir"])


def test_local_run_equals_direct_encode_and_predict_movie(assets, local_run, tmp_path):
    folder, files = assets
    out, result = local_run
    assert result.ok and (result.n_units, result.n_skipped, result.n_done) == (3 * 2 + 2, 0, 8)
    for subject in (1, 2):
        model = _model(files, subject)
        direct = berg.encode(model, [str(p) for p in files["photos"]], show_progress=False)
        shards = sorted((out / f"sub-0{subject}" / "func").glob("*_responses.h5"))
        assert [p.name for p in shards] == [f"sub-0{subject}_task-photos_space-individual_chunk-00{i}_desc-"
                                            "testresnet18_responses.h5" for i in range(3)]
        stacked, names = [], []
        for path in shards:
            with h5py.File(path) as h5:
                stacked.append(h5["responses"][()])
                names += [n.decode() for n in h5["stimuli"][()]]
                np.testing.assert_array_equal(h5["voxel_ijk"][()], model.metadata["voxel_ijk"])
        assert names == [str(p) for p in files["photos"]]
        for shard, start in zip(stacked, range(0, 5, 2)):  # a shard is one encode call: bit-identical
            np.testing.assert_array_equal(shard, berg.encode(model, names[start:start + 2], show_progress=False))
        # one call over all images batches them otherwise (the conv arithmetic differs in the last bits)
        assert np.abs(np.concatenate(stacked) - direct).max() <= 1e-6 * np.abs(direct).max()
    model = _model(files, 1)
    for film in files["films"]:
        direct = berg.predict_movie(model, film, tr=1.0, hrf="glover", show_progress=False,
                                    output=tmp_path / f"{film.stem}.h5")
        stem = f"sub-01_task-{film.stem.replace('_', '')}"
        stored = berg.sinks.read_h5(out / "sub-01" / "func" / f"{stem}_space-individual_desc-testresnet18_bold.h5")
        np.testing.assert_array_equal(stored["bold"], direct.bold)
        assert stored["bold"].shape == (FILMS[film.stem] // 10, 60)
        table = np.loadtxt(gzip.open(out / "sub-01" / "func" / f"{stem}_recording-testresnet18_stim.tsv.gz"), ndmin=2)
        sidecar = json.loads((out / "sub-01" / "func" / f"{stem}_recording-testresnet18_stim.json").read_text())
        assert sidecar["Columns"][:3] == ["lA", "rA", "B"] and sidecar["SamplingFrequency"] == 1.0
        np.testing.assert_allclose(table[:, 2], direct.bold[:, 0::4].mean(axis=1), rtol=1e-6, atol=1e-8)
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "berg"


def test_rerun_skips_finished_units_and_redoes_damaged_ones(assets, local_run, tmp_path, monkeypatch):
    folder, _ = assets
    out, _ = local_run
    ran = units_run(monkeypatch)
    again = berg.batch.run(job_dict(folder, out), show_progress=False)
    assert (again.n_skipped, again.n_done, ran) == (8, 0, [])
    before = read_outputs(out)
    damaged = next((out / "sub-02" / "func").glob("*chunk-001*"))
    damaged.write_bytes(damaged.read_bytes()[:-100])
    record = out / "logs" / "units" / "sub-01_task-filma_desc-testresnet18.json"
    record.unlink()
    again = berg.batch.run(job_dict(folder, out), show_progress=False)
    assert sorted(ran) == ["sub-01_task-filma_desc-testresnet18", "sub-02_task-photos_chunk-001_desc-testresnet18"]
    assert again.n_skipped == 6 and again.ok
    after = read_outputs(out)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
    stored = json.loads(record.read_text())
    assert stored["params"]["model"]["subject"] == 1
    assert sorted(Path(rel).name.rsplit("_", 1)[1] for rel in stored["outputs"]) == [
        "bold.h5", "bold.json", "bold.nii.gz", "stim.json", "stim.tsv.gz"]  # every file of the unit is hashed


def test_sigkill_mid_run_then_rerun_redoes_only_unfinished_units(assets, local_run, tmp_path, monkeypatch):
    folder, _ = assets
    out = tmp_path / "killed"
    job = tmp_path / "job.json"
    job.write_text(json.dumps(job_dict(folder, out)))
    script = textwrap.dedent(f"""
        import json, os, signal, sys
        import berg.batch
        from berg.batch import execute
        calls, encode = [], execute.encode
        def dying_encode(*args, **kwargs):  # the second image shard (both subjects' in one pass) dies half-written
            calls.append(1)
            if len(calls) == 2:
                assert "ray" not in sys.modules  # the local engine never imports Ray
                os.kill(os.getpid(), signal.SIGKILL)
            return encode(*args, **kwargs)
        execute.encode = dying_encode
        berg.batch.run(json.loads(open({str(job)!r}).read()), show_progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    finished = sorted(p.stem for p in (out / "logs" / "units").glob("*.json"))
    assert finished == [f"sub-0{s}_task-photos_chunk-000_desc-testresnet18" for s in (1, 2)]  # the first shard
    for sub in ("sub-01", "sub-02"):  # the shard being written when killed, one file per subject
        assert len(list((out / sub / "func").glob(".*.part.h5"))) == 1
    ran = units_run(monkeypatch)
    result = berg.batch.run(json.loads(job.read_text()), show_progress=False)
    assert result.ok and result.n_skipped == 2 and sorted(ran + finished) == sorted(
        p.stem for p in (out / "logs" / "units").glob("*.json"))
    assert not list(out.rglob(".*.part*"))  # the killed run's temporary file is gone
    reference, resumed = read_outputs(local_run[0]), read_outputs(out)
    assert resumed.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key])


def test_corrupt_film_gives_one_failure_row_and_the_rest_completes(assets, tmp_path, capsys):
    folder, _ = assets
    broken = tmp_path / "films"
    broken.mkdir()
    (broken / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (broken / "good.mp4").symlink_to(folder / "films" / "film_a.mp4")
    job = job_dict(folder, tmp_path / "out")
    job["rows"][1]["stimuli"] = str(broken / "*.mp4")
    (tmp_path / "job.yaml").write_text(json.dumps(job))  # JSON is YAML
    assert main(["batch", str(tmp_path / "job.yaml"), "--quiet"]) == 1
    failures = pd.read_csv(tmp_path / "out" / "logs" / "failures.tsv", sep="\t")
    assert len(failures) == 1 and failures["unit"][0] == "sub-01_task-broken_desc-testresnet18"
    assert failures["error_type"][0] == "InvalidStimulusError" and "broken.mp4" in failures["message"][0]
    assert len(list((tmp_path / "out" / "logs" / "units").glob("*.json"))) == 7
    assert "1 failed" in capsys.readouterr().err


def _bad(job, row=None):
    return job["rows"][row - 1] if row else job


@pytest.mark.parametrize("change, row, field, phrase", [
    (lambda j: _bad(j, 2).update(model="test-resnet8"), 2, "model", "Did you mean: test-resnet18"),
    (lambda j: _bad(j, 1).update(subjects=[1, 3]), 1, "subjects", "3 is not a subject of 'test-resnet18'; valid: 'all', 1, 2"),
    (lambda j: _bad(j, 2).update(stimuli="nowhere/*.mp4"), 2, "stimuli", "matches no file"),
    (lambda j: _bad(j, 1).update(stimuli="missing_folder"), 1, "stimuli", "'missing_folder' does not exist"),
    (lambda j: j["rows"].append(dict(_bad(j, 1), shard_size=3)), 3, "desc", "is also made by row 1"),
    (lambda j: _bad(j, 2).update(hrf_model="spm"), 2, "hrf_model", r"unknown field\(s\) \[.hrf_model.\]. Did you mean: .*hrf"),
    (lambda j: j.update(outputs="x"), None, "outputs", "Valid fields: output, berg_dir, ray, rows"),
    (lambda j: _bad(j, 2).pop("tr"), 2, "tr", "films need the repetition time"),
    (lambda j: _bad(j, 1).update(selection={"roi": "lB"}), 1, "selection", "'lB' is not an ROI"),
    (lambda j: j.update(ray={"actors": 0}), None, "ray.actors", "ray.actors=0 is not valid: expected an integer >= 1"),
    (lambda j: _bad(j, 1).update(batch_size=True), 1, "batch_size", "batch_size=True is not valid: expected an integer"),
    (lambda j: _bad(j, 2).update(tr="2"), 2, "tr", r"tr='2' is not valid: expected a finite number > 0 \(s\)"),
    (lambda j: _bad(j, 2).update(hrf="spn"), 2, "hrf", "hrf='spn' is not valid: expected one of 'spm', 'glover', 'none'"),
])
def test_bad_jobs_raise_typed_errors_naming_row_and_field_before_any_work(assets, tmp_path, change, row, field,
                                                                          phrase):
    folder, _ = assets
    job = job_dict(folder, tmp_path / "out")
    change(job)
    with pytest.raises(JobError, match=phrase) as info:
        berg.batch.run(job, show_progress=False)
    assert (info.value.row, info.value.field) == (row, field)
    assert str(info.value).startswith("job" + (f" row {row}" if row else "") + f", field {field!r}")
    assert not (tmp_path / "out").exists()


def test_tsv_job_plans_the_same_units_as_yaml(assets, tmp_path):
    folder, _ = assets
    yaml_job = job_dict(folder, tmp_path / "out")
    (tmp_path / "job.tsv").write_text(
        "stimuli\tmodel\tsubjects\tshard_size\ttr\thrf\tdevice\tbackbone_weights\toutput\tberg_dir\n"
        f"photos\t{MODEL}\t1,2\t2\t\t\tcpu\tuntrained\t{tmp_path / 'out'}\tberg_dir\n"
        f"films/*.mp4\t{MODEL}\t1\t\t1.0\tglover\tcpu\tuntrained\t{tmp_path / 'out'}\tberg_dir\n")
    # relative paths in a job file are relative to its folder
    (tmp_path / "photos").symlink_to(folder / "photos")
    (tmp_path / "films").symlink_to(folder / "films")
    (tmp_path / "berg_dir").symlink_to(folder / "berg_dir")
    from_tsv = berg.batch.plan(berg.batch.load_job(tmp_path / "job.tsv"))
    from_yaml = berg.batch.plan(berg.batch.load_job(yaml_job))
    assert [u.uid for u in from_tsv] == [u.uid for u in from_yaml] and len(from_tsv) == 8
    assert [u.options for u in from_tsv] == [u.options for u in from_yaml]
    (tmp_path / "bad.tsv").write_text("stimuli\tmodel\toutput\nphotos\tnope\ta\nphotos\tnope\tb\n")
    with pytest.raises(JobError, match=r"bad.tsv row 2, field 'output'.*one value on every row"):
        berg.batch.load_job(tmp_path / "bad.tsv")


def test_ray_engine_without_ray_says_how_to_install(assets, tmp_path, monkeypatch):
    folder, _ = assets
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(OptionalDependencyError, match=r'pip install "berg\[ray\]"'):
        berg.batch.run(job_dict(folder, tmp_path / "out"), engine="ray", show_progress=False)
    assert not (tmp_path / "out").exists()

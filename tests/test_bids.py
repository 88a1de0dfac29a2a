"""A batch job's output root is a BIDS derivatives dataset: the BIDS validator reports no error, pybids indexes
every output with the entities its name promises and reads each sidecar."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _support import ramp_video, write_space_model
from PIL import Image

import berg.batch

IMG2FMRI = "fmri-bold5000-resnet18"
TR = 2.0
# what the validator may still warn about, and why (the closing note of the outputs work lists the same)
ALLOWED_WARNINGS = {
    # recommended, not required, for a standard template: the name's space-<TemplateFlow id> already says it
    ("SIDECAR_KEY_RECOMMENDED", "SpatialReference"),
    # dataset_description.json has no Authors: berg cannot know who ran the job
    ("TOO_FEW_AUTHORS", None),
}


def _validator() -> str:
    found = shutil.which("bids-validator-deno", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        pytest.fail("bids-validator-deno is not installed; it is part of the dev extra (pip install -e '.[dev]')")
    return found


@pytest.fixture(scope="module")
def bids_run(img2fmri_model_dir, tmp_path_factory):
    """The README's job on synthetic films and photos: img2fmri subject 1 and group on two films, subjects 1 and 2
    on six photos in shards of 4, and a toy fsaverage5 model on the films (GIFTI outputs)."""
    folder = tmp_path_factory.mktemp("bids")
    berg_dir = folder / "berg_dir"
    linked = berg_dir / img2fmri_model_dir.relative_to(img2fmri_model_dir.parents[3])
    linked.parent.mkdir(parents=True)
    linked.symlink_to(img2fmri_model_dir, target_is_directory=True)
    write_space_model(berg_dir, "surface")
    rng = np.random.default_rng(0)
    (folder / "photos").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / "photos" / f"im{i}.png")
    (folder / "films").mkdir()
    for name in ("film_a", "film_b"):
        ramp_video(folder / "films" / f"{name}.mp4", 40, 10.0, size=(32, 48))
    common = {"device": "cpu", "backbone_weights": "untrained"}
    job = {"output": str(folder / "out"), "berg_dir": str(berg_dir), "rows": [
        {"stimuli": str(folder / "films" / "*.mp4"), "model": IMG2FMRI, "subjects": [1, "group"], "tr": TR,
         **common},
        {"stimuli": str(folder / "photos"), "model": IMG2FMRI, "subjects": [1, 2], "shard_size": 4, **common},
        {"stimuli": str(folder / "films" / "*.mp4"), "model": "toy-surface", "subjects": [1], "tr": TR, **common}]}
    result = berg.batch.run(job, show_progress=False)
    assert result.ok, result.failures
    return folder / "out", folder


def test_the_bids_validator_reports_no_error(bids_run):
    root, _ = bids_run
    done = subprocess.run([_validator(), "--format", "json", str(root)], capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    issues = report["issues"]["issues"]
    errors = [(i["code"], i.get("subCode"), i.get("location")) for i in issues if i["severity"] == "error"]
    assert errors == []
    warnings = {(i["code"], i.get("subCode")) for i in issues if i["severity"] == "warning"}
    assert warnings <= ALLOWED_WARNINGS, warnings - ALLOWED_WARNINGS
    # every NIfTI, TSV and JSON is looked at; ignored are berg's HDF5 files, logs/ and the surface series (BIDS
    # defines no functional surface data), with their sidecars by exact name
    surface_sidecars = [f"sub-01/func/sub-01_task-{t}_space-fsaverage5_desc-toysurface_bold.json" for t in ("filma", "filmb")]
    assert sorted((root / ".bidsignore").read_text().split()) == sorted(
        ["*_bold.h5", "*_responses.h5", "*_bold.func.gii", *surface_sidecars, "logs/"])
    assert all((root / p).is_file() for p in surface_sidecars)
    checked = [p for p in root.rglob("*") if p.is_file() and "logs" not in p.parts and p.suffix not in (".h5", ".gii")
               and p.relative_to(root).as_posix() not in surface_sidecars]
    assert report["summary"]["totalFiles"] >= len(checked) > 20


def test_pybids_indexes_every_output_with_its_entities(bids_run):
    from bids import BIDSLayout

    root, folder = bids_run
    layout = BIDSLayout(root, is_derivative=True, validate=False)
    volumes = layout.get(suffix="bold", extension=".nii.gz")
    assert sorted((f.entities["subject"], f.entities["task"], f.entities["space"]) for f in volumes) == [
        ("01", "filma", "individual"), ("01", "filmb", "individual"),
        ("group", "filma", "MNI152NLin6Asym"), ("group", "filmb", "MNI152NLin6Asym")]
    for f in volumes:
        meta = layout.get_metadata(f.path)
        assert f.entities["desc"] == "fmribold5000resnet18" and meta["RepetitionTime"] == TR
        assert meta["Sources"] == [(folder / "films" / f"film_{f.entities['task'][-1]}.mp4").as_uri()]
        assert meta["EncodingModelSubject"] == (f.entities["subject"] if f.entities["subject"] == "group" else 1)
    surfaces = layout.get(suffix="bold", extension=".func.gii")
    assert sorted((f.entities["task"], f.entities["hemi"], f.entities["space"]) for f in surfaces) == [
        (task, hemi, "fsaverage5") for task in ("filma", "filmb") for hemi in ("L", "R")]
    assert all(layout.get_metadata(f.path)["RepetitionTime"] == TR for f in surfaces)  # one sidecar, both hemis
    tables = layout.get(suffix="stim", extension=".tsv.gz")
    assert len(tables) == 2 * 2 + 2 and all("desc" not in f.entities for f in tables)
    for f in tables:
        meta = layout.get_metadata(f.path)
        assert meta["SamplingFrequency"] == 1 / TR and meta["Columns"]
        assert np.loadtxt(f.path, ndmin=2).shape == (2, len(meta["Columns"]))  # 4 s films at TR 2 s
    description = layout.get_dataset_description()
    assert description["GeneratedBy"][0]["Name"] == "berg" and "berg.batch.run" in description["GeneratedBy"][0][
        "Description"]
    assert {"URL": "https://pypi.org/project/img2fmri/1.0/", "Version": "1.0"} in description["SourceDatasets"]

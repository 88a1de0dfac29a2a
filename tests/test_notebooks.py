"""The notebooks run end to end (untrained backbones, synthetic fmri-bmd-s3d weights, the imported img2fmri model)."""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from berg.storage.synthetic import write_synthetic_model

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, parameters: dict, workdir: Path) -> nbformat.NotebookNode:
    """Execute a notebook with its ``parameters`` cell replaced; returns the executed notebook."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def _outputs(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.slow  # a Jupyter kernel runs the notebook
def test_quickstart(img2fmri_model_dir, tmp_path):
    berg_dir = tmp_path / "berg_dir"
    shutil.copytree(img2fmri_model_dir, berg_dir / img2fmri_model_dir.relative_to(img2fmri_model_dir.parents[3]))
    write_synthetic_model(berg_dir, "fmri-bmd-s3d", subject=1)
    nb = run_notebook("quickstart.ipynb", {"BERG_DIR": str(berg_dir), "BACKBONE_WEIGHTS": None}, tmp_path)
    text = _outputs(nb)
    assert "(8, 331) z-scored BOLD" in text  # subject 1 PPA: 131 + 200 voxels
    assert "(91, 109, 91, 8) 9641 overlap voxels" in text
    assert "(1, 400)" in text  # lFFA and rFFA of the synthetic BMD model: 200 voxels each


@pytest.mark.slow  # a Jupyter kernel runs the notebook
def test_movie(img2fmri_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("BERG_HOME", str(img2fmri_model_dir.parents[3]))  # the session's img2fmri import
    nb = run_notebook("movie.ipynb", {}, tmp_path)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = _outputs(nb)
    assert "TR in the header: 1.0 s; shape (91, 109, 91, 24)" in text
    assert "samples: 48 scans: (24, 9641)" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # predictors, glass brain, similarity


@pytest.mark.slow  # a Jupyter kernel runs the notebook
def test_training(tmp_path):
    nb = run_notebook("training.ipynb", {}, tmp_path)
    assert "image/png" in "".join(str(o.get("data", {}).keys()) for c in nb.cells for o in c.get("outputs", []))


def test_every_notebook_is_tested():
    tested = {"quickstart.ipynb", "movie.ipynb", "training.ipynb"}
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == tested

"""The files that make a batch output root a BIDS derivatives dataset.

``dataset_description.json``
    ``DatasetType: derivative``; ``GeneratedBy`` names berg, its version and the command that ran; ``SourceDatasets``
    lists where each model's files come from (its card's sources: BERG's S3 bucket, a PyPI wheel).
``README``
    What the folder holds and how its names are built.
``.bidsignore``
    The files BIDS does not define (berg's HDF5 outputs, surface series and their sidecars, ``logs/``), exactly
    those. Lines that an earlier run of another job wrote into the same root are kept.
"""

from __future__ import annotations

from pathlib import Path

from .._io import atomic_path, write_json
from ..config import berg_version
from ..registry import get_card
from ..writers import writer_for
from .units import Unit

BIDS_VERSION = "1.9.0"
LOGS_PATTERN = "logs/"


def source_datasets(cards) -> list[dict]:
    """``SourceDatasets`` entries (``URL``, ``Version``) for the model files of ``cards``, each once."""
    links = [link for card in cards for source in card.sources if (link := source.dataset_link())]
    return [dict(items) for items in dict.fromkeys(tuple(link.items()) for link in links)]


def write_description(root: Path, units: list[Unit], berg_dir, command: str) -> Path:
    """Write ``dataset_description.json`` for the models of ``units`` (``command``: what ran the job)."""
    cards = [get_card(m, berg_dir) for m in dict.fromkeys(u.model["model_id"] for u in units)]
    description = {"Name": "berg in-silico brain responses", "BIDSVersion": BIDS_VERSION,
                   "DatasetType": "derivative",
                   "GeneratedBy": [{"Name": "berg", "Version": berg_version(),
                                    "Description": f"DNN brain-encoding models; command: {command}"}]}
    sources = source_datasets(cards)
    if sources:
        description["SourceDatasets"] = sources
    path = Path(root) / "dataset_description.json"
    write_json(path, description)
    return path


def ignored_patterns(units: list[Unit]) -> list[str]:
    """``.bidsignore`` lines for the outputs whose writer BIDS does not define: ``*_<suffix><extension>`` of their
    data files and the exact path of their sidecars (a ``_bold.json`` pattern would hide the volumes' sidecars)."""
    patterns = []
    for unit in units:
        role = "series" if unit.kind == "film" else "responses"
        for rel in unit.outputs.values():
            writer = writer_for(rel, role)
            if writer.bids:
                continue
            data = writer.data_files(rel, {})
            patterns += ["*_" + Path(f).name.rsplit("_", 1)[-1] for f in data]
            patterns += [Path(f).as_posix() for f in writer.files(rel, {}, role) if f not in data]
    return [*dict.fromkeys(patterns), LOGS_PATTERN]


def write_bidsignore(root: Path, units: list[Unit]) -> Path:
    """Write ``.bidsignore`` with :func:`ignored_patterns`, keeping the patterns already there."""
    path = Path(root) / ".bidsignore"
    old = path.read_text().split() if path.is_file() else []
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(dict.fromkeys([*old, *ignored_patterns(units)])) + "\n")
    return path


README = """\
In-silico brain responses computed by berg {version} (DNN brain-encoding models), as a BIDS derivatives dataset.

sub-<label>/func/ holds, per film and model:
  *_bold.nii.gz / *_hemi-L|R_bold.func.gii  predicted BOLD, one volume (or data array) per scan, with a JSON sidecar
                                            (RepetitionTime, the model, the film in Sources)
  *_stim.tsv.gz + *_stim.json               ROI-mean predictors and low-level baselines per scan (BIDS continuous
                                            data: no header row; Columns, SamplingFrequency and StartTime in the
                                            sidecar)
  *_bold.h5                                 berg's HDF5: per-sample and per-scan responses and every column's
                                            coordinates (h5py reads it without berg)
and per image shard *_chunk-<index>_..._responses.h5 (responses, stimulus names, column coordinates), under
func/ for models of the brain's volume or surface and eeg/ (meg/) for sensor models (channels x time points).

Names: task from the film or image set, space from the model card (a TemplateFlow template, or "individual" for
a subject's own grid), desc (recording for predictors) from the model id and ROIs. Files BIDS does not define are
listed in .bidsignore. logs/ holds the completion record of every finished unit and the failures table.
"""


def write_readme(root: Path) -> Path:
    """Write the root's ``README``."""
    path = Path(root) / "README"
    with atomic_path(path) as tmp:
        tmp.write_text(README.format(version=berg_version()))
    return path


def write_dataset_files(root: Path, units: list[Unit], berg_dir, command: str) -> None:
    """``dataset_description.json``, ``README`` and ``.bidsignore`` for a run of ``units``."""
    write_description(root, units, berg_dir, command)
    write_readme(root)
    write_bidsignore(root, units)

"""Units of work: one film x model x subject, or one shard of images x model x subject, with their output names.

Output names are BIDS derivatives, built by :func:`berg.writers.bids.bids_name` (entities in the specification's
order) under ``sub-<label>/<datatype>/`` (``func``; ``eeg`` or ``meg`` for sensor models):

=====================  ==============================================================================
output                 name
=====================  ==============================================================================
film, volume model     ``sub-<s>_task-<t>_space-<space>_desc-<d>_bold.nii.gz`` + ``_bold.json``
film, surface model    ``sub-<s>_task-<t>_hemi-L_space-<space>_desc-<d>_bold.func.gii`` (and ``hemi-R``) +
                       ``sub-<s>_task-<t>_space-<space>_desc-<d>_bold.json``
film, every model      ``sub-<s>_task-<t>_space-<space>_desc-<d>_bold.h5`` (berg's HDF5; in ``.bidsignore``)
film predictors        ``sub-<s>_task-<t>_recording-<d>_stim.tsv.gz`` + ``_stim.json`` (BIDS continuous data)
image shard            ``sub-<s>_task-<t>_space-<space>_chunk-<i>_desc-<d>_responses.h5`` (in ``.bidsignore``)
=====================  ==============================================================================

The task label comes from the film's file name or the image set's name (``task``); ``<d>`` from the model id and
ROI names (or ``desc``); the space is the card's template (``individual`` for a subject's own grid; the group's
template for ``subject: group``). Labels keep only letters and digits. Two units that would write the same name
are refused when the job is planned, before any work.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from ..registry import get_card
from ..writers.bids import bids_name, label
from ..writers.sidecars import INDIVIDUAL
from .job import Job, Row, fail

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
ARRAY_SUFFIXES = (".npy", ".h5", ".hdf5")
MOVIE_OPTIONS = ("tr", "n_scans", "hrf", "slice_time_ref", "sample_rate_hz", "clip_s", "stride_s", "batch_size")


@dataclass(frozen=True)
class Unit:
    """One unit of work, JSON-able (``asdict``) so that it travels to Ray workers as plain data.

    Attributes
    ----------
    uid : str
        Unique name, e.g. ``sub-01_task-film_desc-fmribmds3d``.
    kind : {"film", "images"}
    row : int
        The job row it comes from.
    model : dict
        ``model_id``, ``subject``, ``selection``, ``device``, ``precision``, ``backbone_weights`` (None: untrained).
    source : dict
        Film: ``{"path"}``; images: ``{"files": [...]}`` or ``{"array", "dataset", "start", "stop"}``.
    options : dict
        Film: the movie parameters; images: ``batch_size``.
    outputs : dict
        Role -> path relative to the output root.
    """

    uid: str
    kind: str
    row: int
    model: dict
    source: dict
    options: dict
    outputs: dict

    def files(self) -> list[str]:
        """Every file the unit's outputs make, relative to the output root (a surface image is two files)."""
        from ..writers import writer_for

        role = "series" if self.kind == "film" else "responses"
        return list(dict.fromkeys(Path(p).as_posix() for rel in self.outputs.values()
                                  for p in writer_for(rel, role).files(rel, {}, role)))

    def model_key(self) -> str:
        """Units with the same key share one loaded model."""
        return json.dumps(self.model, sort_keys=True)

    def describe_source(self) -> str:
        """The stimulus in a few words (for the failures table)."""
        src = self.source
        if "path" in src:
            return src["path"]
        if "files" in src:
            return f"{src['files'][0]} .. ({len(src['files'])} images)"
        return f"{src['array']}[{src['start']}:{src['stop']}]"

    def params(self) -> dict:
        """What the unit's result depends on: model, options and each stimulus file's size and mtime."""
        src = dict(self.source)
        files = [src.pop("path")] if "path" in src else src.pop("files", None) or [src["array"]]
        stats = [{"path": f, "bytes": os.stat(f).st_size, "mtime_ns": os.stat(f).st_mtime_ns} for f in files]
        model = {k: v for k, v in self.model.items() if k != "device"}
        return {"unit": self.uid, "kind": self.kind, "model": model, "options": self.options,
                "array": src or None, "stimuli": stats}

    @classmethod
    def from_dict(cls, data: dict) -> Unit:
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def plan(job: Job) -> list[Unit]:
    """Every unit of ``job`` in a fixed order (rows, then stimuli, then subjects).

    Raises
    ------
    JobError
        Missing stimuli, unsupported files, films without ``tr``, arrays of the wrong shape, and output names two
        units share; before any work.
    """
    units: list[Unit] = []
    owners: dict[str, tuple[int, str]] = {}
    for row in job.rows:
        for unit in _row_units(job, row):
            for name in (unit.uid, *unit.outputs.values()):
                if name in owners:
                    first_row, first = owners[name]
                    raise fail(job.source, row.index, "desc", f"output name {name!r} is also made by row {first_row} "
                               f"({first}) from {unit.describe_source()}; give one of them another task or desc")
                owners[name] = (row.index, unit.describe_source())
            units.append(unit)
    return units


def _expand(job: Job, row: Row) -> list[Path]:
    files: list[Path] = []
    for entry in row.stimuli:
        path = (job.base / entry).expanduser()
        if glob.has_magic(entry):
            found = [Path(p) for p in sorted(glob.glob(str(path), recursive=True)) if Path(p).is_file()]
            if not found:
                raise fail(job.source, row.index, "stimuli", f"pattern {entry!r} matches no file")
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not found:
                raise fail(job.source, row.index, "stimuli", f"folder {entry!r} holds no image or video file")
        elif path.is_file():
            found = [path]
        else:
            raise fail(job.source, row.index, "stimuli", f"{entry!r} does not exist (looked for {str(path)!r})")
        files += found
    return files


def _set_name(row: Row) -> str:
    entry = row.stimuli[0]
    if glob.has_magic(entry):
        parts = [p for p in Path(entry).parts if not glob.has_magic(p)]
        return parts[-1] if parts else "images"
    return Path(entry).name if not Path(entry).suffix else Path(entry).stem


def _row_units(job: Job, row: Row) -> list[Unit]:
    card = get_card(row.model, job.berg_dir)
    opts = row.options
    files = _expand(job, row)
    by_kind = {k: [f for f in files if f.suffix.lower() in s]
               for k, s in (("film", VIDEO_SUFFIXES), ("image", IMAGE_SUFFIXES), ("array", ARRAY_SUFFIXES))}
    other = [f for f in files if not any(f in v for v in by_kind.values())]
    if other:
        raise fail(job.source, row.index, "stimuli", f"{str(other[0])!r} is not a supported file; valid: images "
                   f"({', '.join(IMAGE_SUFFIXES)}), videos ({', '.join(VIDEO_SUFFIXES)}), arrays (.npy, .h5)")
    if by_kind["film"] and opts["tr"] is None:
        raise fail(job.source, row.index, "tr", "films need the repetition time tr (s); got none")
    image_suffix, datatype = card.space.space.image_suffix, card.space.space.datatype(card)
    if by_kind["film"] and image_suffix is None:
        raise fail(job.source, row.index, "stimuli", f"{str(by_kind['film'][0])!r} is a film, but {row.model!r} "
                   f"predicts {card.space.kind} outputs, which have no scanner time series; give images")
    if by_kind["image"] and card.stimulus_kind == "video":
        raise fail(job.source, row.index, "stimuli", f"{str(by_kind['image'][0])!r} is an image, but {row.model!r} "
                   "is a video model; give films or an array of clips")
    sets: list[tuple[str, dict, int]] = []  # (task, source without start/stop, n items)
    if by_kind["image"]:
        sets.append((opts["task"] or _set_name(row), {"files": [str(f) for f in by_kind["image"]]},
                     len(by_kind["image"])))
    for path in by_kind["array"]:
        task = opts["task"] if opts["task"] and len(by_kind["array"]) == 1 else path.stem
        sets.append((task, {"array": str(path), "dataset": opts["dataset"]}, _array_length(job, row, card, path)))
    films = [(opts["task"] if opts["task"] and len(by_kind["film"]) == 1 else f.stem, f) for f in by_kind["film"]]
    desc = label(opts["desc"] or row.model + "".join(_selected_names(row.selection)))
    model_base = {"model_id": row.model, "selection": row.selection, "device": opts["device"],
                  "precision": opts["precision"],
                  "backbone_weights": None if opts["backbone_weights"] == "untrained" else opts["backbone_weights"]}
    units = []
    for subject in row.subjects:
        model = {**model_base, "subject": subject}
        sub = "group" if subject == "group" else f"{int(subject):02d}"
        space = label((card.group.template if subject == "group" else card.space.template) or INDIVIDUAL)
        for task, path in films:
            names = {"sub": sub, "task": _checked_label(job, row, task)}
            image = {**names, "space": space, "desc": desc}
            outputs = {"image": bids_name(image, "bold", image_suffix), "hdf5": bids_name(image, "bold", ".h5"),
                       "predictors": bids_name({**names, "recording": desc}, "stim", ".tsv.gz")}
            units.append(Unit(uid=bids_name({**names, "desc": desc}), kind="film",
                              row=row.index, model=model, source={"path": str(path)},
                              options={k: opts[k] for k in MOVIE_OPTIONS},
                              outputs={k: f"sub-{sub}/{datatype}/{v}" for k, v in outputs.items()}))
        for task, source, n in sets:
            names = {"sub": sub, "task": _checked_label(job, row, task)}
            size = int(opts["shard_size"])
            width = max(3, len(str((n - 1) // size)))
            for i, start in enumerate(range(0, n, size)):
                chunk = f"{i:0{width}d}"
                if "files" in source:
                    src = {"files": source["files"][start:start + size]}
                else:
                    src = {**source, "start": start, "stop": min(start + size, n)}
                shard = {**names, "chunk": chunk, "desc": desc}
                units.append(Unit(uid=bids_name(shard), kind="images", row=row.index,
                                  model=model, source=src, options={"batch_size": opts["batch_size"]},
                                  outputs={"responses": f"sub-{sub}/{datatype}/"
                                                        + bids_name({**shard, "space": space}, "responses", ".h5")}))
    return units


def _selected_names(selection: dict | None) -> list[str]:
    """The names a row's selection chooses (ROIs, then channels), for the outputs' ``desc``."""
    names: list[str] = []
    for value in (selection or {}).values():
        names.extend(value if isinstance(value, list) else [value])
    return names


def _checked_label(job: Job, row: Row, text: str) -> str:
    out = label(text)
    if not out:
        raise fail(job.source, row.index, "task", f"{text!r} has no letters or digits to name outputs by; give task")
    return out


def _array_length(job: Job, row: Row, card, path: Path) -> int:
    ndim = 5 if card.stimulus_kind == "video" else 4
    if path.suffix.lower() == ".npy":
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError) as exc:
            raise fail(job.source, row.index, "stimuli", f"{str(path)!r} cannot be read as an array: {exc}") from exc
    else:
        name = row.options["dataset"]
        if not name:
            raise fail(job.source, row.index, "dataset", f"{str(path)!r} is HDF5; name the array in it with dataset")
        try:
            with h5py.File(path, "r") as handle:
                shape = handle[name].shape
        except (OSError, KeyError) as exc:
            raise fail(job.source, row.index, "dataset", f"{name!r} cannot be read from {str(path)!r}: {exc}") from exc
    if len(shape) != ndim or shape[0] < 1:
        what = "(N, T, H, W, 3) or (N, T, 3, H, W) clips" if ndim == 5 else "(N, H, W, 3) or (N, 3, H, W) images"
        raise fail(job.source, row.index, "stimuli", f"{str(path)!r} holds an array of shape {tuple(shape)}; "
                   f"{row.model!r} takes {what}")
    return int(shape[0])

"""Batch job descriptions: YAML or TSV in, validated :class:`Job` out (typed errors name the row and field).

YAML::

    output: derivatives/berg            # output root (relative paths: to the job file's folder)
    berg_dir: models                    # optional; default $BERG_HOME or the user cache
    ray: {actors: 2, num_gpus: 1}       # optional Ray engine settings (RAY_FIELDS; decode_tasks 0: 2 per actor)
    rows:
      - stimuli: films/*.mp4            # files, folders, glob patterns, or an .npy / .h5 array file
        model: MODEL_ID                 # a model id of `berg list` (here a video model)
        subjects: [1, 2]                # "all", "group", a number or a list
        selection: {roi: [ROI_A, ROI_B]}
        tr: 1.5
      - stimuli: photos/
        model: OTHER_MODEL_ID           # an image model
        subjects: all

``selection`` takes ROI names, and channel names for sensor models (``{channels: [Oz, Pz]}``); masks are for the
API. Movie fields (films only): ``tr`` (required), ``n_scans``, ``hrf`` (spm, glover, none), ``slice_time_ref``,
``sample_rate_hz`` (image models; 0 = every frame), ``clip_s`` and ``stride_s`` (video models). Image sets are cut
into shards of ``shard_size`` images; ``task`` names an image set and ``desc`` overrides the model label in names.

TSV: a header row naming row fields (ROW_FIELDS, plus ``output`` and ``berg_dir``, which must hold one value on
every row); ``subjects`` and ``roi`` take comma-separated lists; an empty cell is the default.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .. import validation
from .._yaml import UnsafeYamlError, check_file_size, parse_yaml, read_yaml
from ..config import PRECISIONS
from ..errors import InvalidArgumentError, InvalidSelectionError, JobError, close_matches
from ..registry import get_card

ROW_DEFAULTS: dict[str, Any] = {
    "stimuli": None, "model": None, "subjects": "all", "selection": None, "roi": None, "dataset": None,
    "task": None, "desc": None, "device": "auto", "precision": "float32", "backbone_weights": "default",
    "shard_size": 1000, "batch_size": None, "tr": None, "n_scans": None, "hrf": "spm", "slice_time_ref": 0.0,
    "sample_rate_hz": 2.0, "clip_s": 3.0, "stride_s": None,
}
ROW_FIELDS = tuple(ROW_DEFAULTS)
JOB_FIELDS = ("output", "berg_dir", "ray", "rows")
RAY_FIELDS = {"actors": 1, "num_gpus": 0.0, "cpus_per_actor": 1.0, "cpus_per_decode": 1.0, "decode_tasks": 0,
              "max_retries": 3}
HRFS = ("spm", "glover", "none")
_TSV_LISTS = ("subjects", "roi")


@dataclass(frozen=True)
class Row:
    """One validated row: stimuli x one model x its subjects, with model and movie options."""

    index: int
    stimuli: tuple[str, ...]
    model: str
    subjects: tuple
    selection: dict | None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """A validated job. ``source`` names the file (or "job") in error messages."""

    output: Path
    berg_dir: Path | None
    rows: tuple[Row, ...]
    ray: dict
    source: str = "job"
    base: Path = Path(".")


def fail(source: str, row: int | None, name: str | None, message: str) -> JobError:
    """A :class:`JobError` whose message starts with where the problem is."""
    where = source + (f" row {row}" if row is not None else "") + (f", field {name!r}" if name else "")
    return JobError(f"{where}: {message}", row=row, field=name)


def load_job(job: str | os.PathLike | dict | Job) -> Job:
    """Read and validate a job: a ``.yaml``/``.yml`` or ``.tsv`` file, a dict of the YAML's content, or a Job.

    Relative paths in a file are relative to the file's folder; in a dict, to the working folder.

    Raises
    ------
    JobError
        Unknown fields, unknown models, subjects or ROIs a card does not list, bad values; names row and field.
    """
    if isinstance(job, Job):
        return job
    if isinstance(job, dict):
        return _from_dict(job, "job", Path.cwd())
    path = Path(job)
    if not path.is_file():
        raise JobError(f"job={str(path)!r} is not a file; give a .yaml, .yml or .tsv job file", field="job")
    name = path.name.lower()
    if name.endswith((".yaml", ".yml")):
        try:
            data = read_yaml(path)
        except UnsafeYamlError as exc:
            raise fail(path.name, None, None, str(exc)) from exc
        return _from_dict(data, path.name, path.parent.resolve())
    if name.endswith(".tsv"):
        return _from_dict(_tsv_dict(path), path.name, path.parent.resolve())
    raise JobError(f"job={str(path)!r} has an unknown extension; valid: .yaml, .yml, .tsv", field="job")


def _tsv_dict(path: Path) -> dict:
    try:
        check_file_size(path)
    except UnsafeYamlError as exc:
        raise fail(path.name, None, None, str(exc)) from exc
    with open(path, newline="") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    if not table:
        raise fail(path.name, None, None, "has no rows under its header")
    data: dict[str, Any] = {"rows": []}
    for i, raw in enumerate(table, start=1):
        if None in raw:
            raise fail(path.name, i, None, f"has more cells than the header's {len(raw) - 1} columns")
        row = {k: v.strip() for k, v in raw.items() if v is not None and v.strip() != ""}
        for key in ("output", "berg_dir"):
            if key in row:
                value = row.pop(key)
                if data.setdefault(key, value) != value:
                    raise fail(path.name, i, key, f"is {value!r} but an earlier row gives {data[key]!r}; "
                                                  "it must hold one value on every row")
        try:
            parsed = {k: v if k in ("stimuli", "task", "desc") else parse_yaml(v) for k, v in row.items()}
            for key in _TSV_LISTS:
                if key in row and "," in row[key]:
                    parsed[key] = [parse_yaml(v.strip()) for v in row[key].split(",")]
        except UnsafeYamlError as exc:
            raise fail(path.name, i, None, f"a cell {exc}") from exc
        data["rows"].append(parsed)
    return data


def _unknown(source: str, row: int | None, given, valid) -> JobError:
    bad = sorted(set(given) - set(valid))
    return fail(source, row, bad[0], f"unknown field(s) {bad}.{close_matches(bad[0], valid)} "
                                     f"Valid fields: {', '.join(valid)}")


def _from_dict(data, source: str, base: Path) -> Job:
    if not isinstance(data, dict):
        raise fail(source, None, None, f"must be a mapping with fields {', '.join(JOB_FIELDS)}; "
                                       f"got {type(data).__name__}")
    if set(data) - set(JOB_FIELDS):
        raise _unknown(source, None, data, JOB_FIELDS)
    output = data.get("output")
    if not isinstance(output, str) or not output.strip():
        raise fail(source, None, "output", f"must be a folder path (the output root); got {output!r}")
    if "://" in output:
        raise fail(source, None, "output", f"{output!r} is a URL; valid: a local or shared filesystem folder")
    berg_dir = data.get("berg_dir")
    if berg_dir is not None and not isinstance(berg_dir, str):
        raise fail(source, None, "berg_dir", f"must be a folder path; got {berg_dir!r}")
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        raise fail(source, None, "rows", f"must be a non-empty list of rows; got {rows!r}")
    berg_dir = (base / berg_dir).expanduser() if berg_dir else None
    checked = tuple(_row(r, i, source, base, berg_dir) for i, r in enumerate(rows, start=1))
    return Job(output=(base / output).expanduser(), berg_dir=berg_dir, rows=checked,
               ray=ray_settings(data.get("ray"), source), source=source, base=base)


def ray_settings(given, source: str = "job") -> dict:
    """The Ray engine settings with defaults filled in (see RAY_FIELDS); bad values raise :class:`JobError`."""
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise fail(source, None, "ray", f"must be a mapping of {', '.join(RAY_FIELDS)}; got {given!r}")
    if set(given) - set(RAY_FIELDS):
        raise _unknown(source, None, given, RAY_FIELDS)
    settings = {**RAY_FIELDS, **{k: v for k, v in given.items() if v is not None}}
    for key, value in settings.items():
        try:
            if key in ("actors", "max_retries", "decode_tasks"):
                validation.integer(f"ray.{key}", value, minimum=1 if key == "actors" else 0)
            else:
                validation.positive_number(f"ray.{key}", value, allow_zero=True)
        except InvalidArgumentError as exc:
            raise fail(source, None, f"ray.{key}", str(exc)) from None
    return settings


def _row(raw, index: int, source: str, base: Path, berg_dir: Path | None) -> Row:
    if not isinstance(raw, dict):
        raise fail(source, index, None, f"must be a mapping of fields; got {raw!r}")
    if set(raw) - set(ROW_FIELDS):
        raise _unknown(source, index, raw, ROW_FIELDS)
    row = {**ROW_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}

    def bad(name: str, message: str) -> JobError:
        return fail(source, index, name, message)

    stimuli = row["stimuli"]
    stimuli = [stimuli] if isinstance(stimuli, str) else stimuli
    if not isinstance(stimuli, list) or not stimuli or not all(isinstance(s, str) and s for s in stimuli):
        raise bad("stimuli", f"must be a path, folder or glob pattern, or a list of them; got {row['stimuli']!r}")
    if not isinstance(row["model"], str):
        raise bad("model", f"must be a model id; got {row['model']!r}")
    try:
        card = get_card(row["model"], berg_dir)
    except Exception as exc:  # UnknownModelError (with close matches), or a broken card in berg_dir
        raise bad("model", str(exc)) from exc
    subjects = _subjects(row["subjects"], card, bad)
    selection = _selection(row, card, bad)
    for name, valid in (("precision", PRECISIONS), ("hrf", HRFS)):
        _checked(bad, name, partial(validation.choice, valid=valid), row[name])
    _checked(bad, "device", partial(validation.device_name, error=InvalidArgumentError), row["device"])
    weights = row["backbone_weights"]
    if not isinstance(weights, str):
        raise bad("backbone_weights", f"must be 'default', 'untrained' or a file path; got {weights!r}")
    if weights not in ("default", "untrained") and not (base / weights).expanduser().is_file():
        raise bad("backbone_weights", f"{weights!r} is not a file; valid: 'default', 'untrained' or a weights file")
    _numbers(row, bad)
    for name in ("task", "desc", "dataset"):
        if row[name] is not None and not isinstance(row[name], str):
            raise bad(name, f"must be text; got {row[name]!r}")
    options = {k: row[k] for k in ROW_FIELDS if k not in ("stimuli", "model", "subjects", "selection", "roi")}
    if weights not in ("default", "untrained"):
        options["backbone_weights"] = str((base / weights).expanduser())
    return Row(index=index, stimuli=tuple(stimuli), model=card.model_id, subjects=subjects, selection=selection,
               options=options)


def _subjects(given, card, bad) -> tuple:
    valid = card.subjects + (["group"] if card.has_group else [])
    if given == "all":
        return tuple(card.subjects)
    items = given if isinstance(given, list) else [given]
    out = []
    for item in items:
        try:
            out.append(card.check_subject(item))
        except Exception:
            raise bad("subjects", f"{item!r} is not a subject of {card.model_id!r}; valid: 'all', "
                                  f"{', '.join(map(str, valid))}, or a list of them") from None
    if not out or len(set(out)) != len(out):
        raise bad("subjects", f"must name each subject once; got {given!r}")
    return tuple(out)


def _selection(row: dict, card, bad) -> dict | None:
    """The row's selection: ROI names, and the names the model's space selects by (sensors: ``channels``)."""
    if row["roi"] is not None and row["selection"] is not None:
        raise bad("roi", "give either roi (TSV) or selection (YAML), not both")
    selection = {"roi": row["roi"]} if row["roi"] is not None else row["selection"]
    if selection is None:
        return None
    space = card.space.space
    keys = ("roi", *space.named_keys)
    if not isinstance(selection, dict) or not selection or not set(selection) <= set(keys):
        forms = " or ".join(f"{{{k}: [NAMES]}}" for k in keys)
        raise bad("selection", f"must be {forms} (masks: use the API); got {selection!r}")
    checked = dict(selection)
    if "roi" in selection:
        names = selection["roi"] if isinstance(selection["roi"], list) else [selection["roi"]]
        rois = list(card.rois)
        for name in names:
            if name not in rois:
                raise bad("selection" if row["roi"] is None else "roi",
                          f"{name!r} is not an ROI of {card.model_id!r}.{close_matches(name, rois)} Valid ROIs: "
                          f"{', '.join(rois)}")
        checked["roi"] = names[0] if len(names) == 1 else names
    try:
        space.check_masks({k: v for k, v in checked.items() if k != "roi"}, card, card.subjects[0])
    except InvalidSelectionError as exc:
        raise bad("selection", str(exc)) from None
    return checked


_NUMBER_CHECKS = {
    "shard_size": partial(validation.integer, minimum=1),
    "batch_size": partial(validation.integer, minimum=1),
    "n_scans": partial(validation.integer, minimum=1),
    "tr": partial(validation.positive_number, unit="s"),
    "slice_time_ref": validation.probability,
    "sample_rate_hz": partial(validation.positive_number, allow_zero=True, unit="Hz"),  # 0: every frame
    "clip_s": partial(validation.positive_number, unit="s"),
    "stride_s": partial(validation.positive_number, unit="s"),
}


def _checked(bad, name: str, check, value) -> None:
    """Run a :mod:`berg.validation` check on a row field; its refusal becomes a :class:`JobError` for the row."""
    try:
        check(name, value)
    except InvalidArgumentError as exc:
        raise bad(name, str(exc)) from None


def _numbers(row: dict, bad) -> None:
    for name, check in _NUMBER_CHECKS.items():
        if row[name] is not None or ROW_DEFAULTS[name] is not None:
            _checked(bad, name, check, row[name])

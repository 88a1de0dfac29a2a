"""Model cards: one YAML file per model, validated against one schema (:mod:`berg.card_schema`) when loaded
and parsed into typed, frozen sections."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ._yaml import UnsafeYamlError, parse_yaml, read_yaml
from .card_schema import CARD_SCHEMA, LEGACY_SPACE_KINDS, PROJECTION_READOUTS, registered_names
from .errors import InvalidSubjectError, ModelCardError, close_matches


def feature_sizes(shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Flattened size of every node's feature shape (per stimulus, no batch axis), in the mapping's order."""
    return {node: math.prod(shape) for node, shape in shapes.items()}


@dataclass(frozen=True)
class StimulusSpec:
    """What the model takes: ``kind`` ``"image"`` or ``"video"``; ``n_frames`` frames per clip (video only)."""

    kind: str
    n_frames: int | None


@dataclass(frozen=True)
class BackboneSpec:
    """The torchvision backbone: builder name, weights (``Enum.MEMBER``), return nodes and their feature shapes.

    ``feature_shapes`` maps a node to its per-stimulus shape (channels first, no batch axis). A backbone torchvision
    does not have is an ``adapter`` (a registered class, :mod:`berg.card_registries`) that builds the network and
    its readout from the model's files, with its own ``options``; its architecture is then the adapter's name.
    """

    architecture: str
    weights: str
    return_nodes: tuple[str, ...]
    feature_shapes: Mapping[str, tuple[int, ...]]
    adapter: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def feature_sizes(self) -> dict[str, int]:
        """Flattened feature size of every return node, in return-node order (computed once); raises
        :class:`ModelCardError` when a return node has no shape."""
        missing = [n for n in self.return_nodes if n not in self.feature_shapes]
        if missing:
            raise ModelCardError(f"field 'backbone.feature_shapes' lacks the return nodes {missing}")
        return feature_sizes({n: self.feature_shapes[n] for n in self.return_nodes})

    @property
    def n_features(self) -> int:
        """Total flattened feature size over the return nodes."""
        return sum(self.feature_sizes.values())


@dataclass(frozen=True)
class PreprocessingSpec:
    """Resize to (h, w), or the shorter side to (n,) keeping the aspect ratio; optional centre crop (h, w); channel
    mean and std, antialias, resize backend."""

    resize: tuple[int, ...]
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    antialias: bool
    resize_backend: str


@dataclass(frozen=True)
class ReadoutSpec:
    """The readout: ``kind`` and, for the ``scaler-*`` kinds, the components of the projection and whether one
    projection serves every subject (``projection: shared``) or each subject has its own (``subject``)."""

    kind: str
    n_components: int | None
    projection: str = "shared"

    @property
    def has_projection(self) -> bool:
        """True when a shared scaler + PCA/SVD projection precedes the per-subject regression."""
        return self.kind in PROJECTION_READOUTS


@dataclass(frozen=True)
class SpaceSpec:
    """Where the outputs live: ``kind`` (a registered output space: volume, surface, sensors), the template
    (a TemplateFlow identifier such as ``MNI152NLin6Asym``, ``fsaverage``, or ``individual``), and the space's
    own fields (``volume_shape``, ``n_vertices``, ``channels`` …), which its class checks."""

    kind: str
    template: str | None
    fields: Mapping[str, Any]

    @property
    def volume_shape(self) -> tuple[int, ...] | None:
        """The volume's shape where the card gives one."""
        shape = self.fields.get("volume_shape")
        return None if shape is None else tuple(shape)

    @property
    def name(self) -> str:
        """The template's name when there is one, else the kind."""
        return self.template or self.kind

    def as_dict(self) -> dict[str, Any]:
        """``{"kind", "template"}``, the card's part of the metadata's ``space``."""
        return {"kind": self.kind, "template": self.template}

    @functools.cached_property
    def space(self) -> Any:
        """The :class:`~berg.spaces.base.OutputSpace` of this section (its class is imported on first use)."""
        from .card_registries import space_class

        return space_class(self.kind)(self)


def _space_spec(section: Mapping[str, Any]) -> SpaceSpec:
    """The typed space section; the kinds of earlier cards (subject, MNI152, fsaverage) name their class."""
    fields = {k: v for k, v in section.items() if k not in ("kind", "template")}
    kind, template = section["kind"], section.get("template")
    if kind in LEGACY_SPACE_KINDS:
        kind, implied = LEGACY_SPACE_KINDS[kind]
        template = template or implied
    return SpaceSpec(kind, template, fields)


@dataclass(frozen=True)
class GroupSpec:
    """A group-level space: ``kind`` (the builder of its readout), template, the ROIs it covers, default smoothing."""

    kind: str
    template: str
    rois: tuple[str, ...]
    sigma_mm: float


@dataclass(frozen=True)
class Source:
    """Where a model's files come from.

    ``kind`` ``"s3"`` uses bucket, region, prefix, unsigned and endpoint_url; ``"pypi-wheel"`` uses name,
    version, filename and sha256; ``"local"`` nothing.
    """

    kind: str
    bucket: str | None = None
    region: str | None = None
    prefix: str = ""
    unsigned: bool = True
    endpoint_url: str | None = None
    name: str | None = None
    version: str | None = None
    filename: str | None = None
    sha256: str | None = None

    def dataset_link(self) -> dict | None:
        """Where the files come from as a BIDS ``SourceDatasets`` entry (``URL``, ``Version``); None for local."""
        if self.kind == "s3":
            url = self.endpoint_url or f"https://{self.bucket}.s3.{self.region or 'us-east-1'}.amazonaws.com"
            return {"URL": f"{url.rstrip('/')}/{self.prefix}"}
        if self.kind == "pypi-wheel":
            return {"URL": f"https://pypi.org/project/{self.name}/{self.version}/", "Version": str(self.version)}
        return None


@dataclass(frozen=True)
class ModelCard:
    """A validated model card, parsed once into typed fields.

    Attributes
    ----------
    data : dict
        The card's content, as in its YAML file (``to_dict`` hands out copies).
    path : str
        Where the card was read from (for error messages).
    model_id, description, modality, train_dataset, model, units : str
    format : str
        The on-disk format its sources hold (see :mod:`berg.card_registries`).
    stimulus, backbone, preprocessing, readout, space : the typed sections
    group : GroupSpec or None
        The group-level space, when the model has one.
    subjects : list of int
    n_voxels : dict subject -> int
    rois, accuracy : tuple of str
        ROI names in output order; accuracy names.
    roi_aliases : dict
        Other spellings of ROI names (as another project's card spells them) -> the name in ``rois``.
    legacy_files : dict with ``shared`` and ``subject`` file patterns
    sources : tuple of Source
    """

    data: dict[str, Any]
    path: str
    model_id: str
    description: str
    modality: str
    train_dataset: str
    model: str
    units: str
    format: str
    stimulus: StimulusSpec
    backbone: BackboneSpec
    preprocessing: PreprocessingSpec
    readout: ReadoutSpec
    space: SpaceSpec
    group: GroupSpec | None
    subjects: list[int]
    n_voxels: Mapping[int, int]
    rois: tuple[str, ...]
    roi_aliases: Mapping[str, str]
    accuracy: tuple[str, ...]
    legacy_files: Mapping[str, tuple[str, ...]]
    sources: tuple[Source, ...]

    @property
    def stimulus_kind(self) -> str:
        return self.stimulus.kind

    @property
    def has_group(self) -> bool:
        return self.group is not None

    @property
    def has_projection(self) -> bool:
        """True when a shared scaler + PCA/SVD projection precedes the per-subject regression."""
        return self.readout.has_projection

    def source(self, kind: str) -> Source | None:
        """The first source of ``kind``, or None."""
        return next((s for s in self.sources if s.kind == kind), None)

    @property
    def folder(self) -> Path:
        """The model's folder, relative to berg_dir, in BERG's layout."""
        return Path("encoding_models", f"modality-{self.modality}", f"train_dataset-{self.train_dataset}",
                    f"model-{self.model}")

    def check_subject(self, subject: int | str) -> int | str:
        """Return ``subject`` normalised (int or ``"group"``), or raise :class:`InvalidSubjectError`."""
        valid = self.subjects + (["group"] if self.has_group else [])
        if isinstance(subject, str) and subject.strip().lower() == "group" and self.has_group:
            return "group"
        if hasattr(subject, "__index__") and not isinstance(subject, (bool, str)) and int(subject) in self.subjects:
            return int(subject)
        raise InvalidSubjectError(
            f"subject={subject!r} is not valid for model {self.model_id!r}: valid subjects are "
            f"{', '.join(map(str, valid))}"
        )

    def check_subjects(self, subjects: Any) -> list[int | str]:
        """``"all"`` (the card's subjects) or a list of distinct subjects, normalised; else
        :class:`InvalidSubjectError`."""
        if isinstance(subjects, str) and subjects.strip().lower() == "all":
            return list(self.subjects)
        if isinstance(subjects, (str, bytes)) or not isinstance(subjects, (list, tuple)) or not subjects:
            raise InvalidSubjectError(f"subject={subjects!r} is not valid for model {self.model_id!r}: give one "
                                      "subject, a non-empty list of them, or 'all'")
        checked = [self.check_subject(s) for s in subjects]
        if len(set(checked)) != len(checked):
            raise InvalidSubjectError(f"subject={list(subjects)!r} names a subject twice; give each once")
        return checked

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the card's content."""
        return copy.deepcopy(self.data)


def _typed(data: dict[str, Any], path: str) -> ModelCard:
    """Build the typed card from validated content."""
    stim, bb, pre, ro, sp = (data[k] for k in ("stimulus", "backbone", "preprocessing", "readout", "space"))
    group = data.get("group")
    files = data.get("legacy_files", {})
    return ModelCard(
        data=data, path=path, model_id=data["model_id"], description=" ".join(data["description"].split()),
        modality=data["modality"], train_dataset=data["train_dataset"], model=data["model"],
        units=data.get("units", "arbitrary"), format=data.get("format", "native"),
        stimulus=StimulusSpec(stim["kind"], stim.get("n_frames")),
        backbone=BackboneSpec(bb.get("architecture", bb.get("adapter")), bb.get("weights", "checkpoint"),
                              tuple(bb.get("return_nodes", ())),
                              {n: tuple(s) for n, s in bb.get("feature_shapes", {}).items()},
                              adapter=bb.get("adapter"), options=dict(bb.get("options", {}))),
        preprocessing=PreprocessingSpec(tuple(pre["resize"]) if isinstance(pre["resize"], list) else (pre["resize"],), tuple(pre["crop"]) if pre.get("crop") else None,
                                        tuple(pre["mean"]), tuple(pre["std"]), bool(pre.get("antialias", True)),
                                        pre.get("resize_backend", "tensor")),
        readout=ReadoutSpec(ro["kind"], ro.get("n_components"), ro.get("projection", "shared")),
        space=_space_spec(sp),
        group=None if group is None else GroupSpec(group["kind"], group["template"], tuple(group["rois"]),
                                                   float(group.get("sigma_mm", 1.0))),
        subjects=list(data["subjects"]), n_voxels=dict(data.get("n_voxels", {})), rois=tuple(data["rois"]),
        roi_aliases=dict(data.get("roi_aliases", {})),
        accuracy=tuple(data.get("accuracy", [])),
        legacy_files={k: tuple(files.get(k, [])) for k in ("shared", "subject")},
        sources=tuple(Source(**s) for s in data["sources"]),
    )


def validate_card(data: Any, path: str) -> ModelCard:
    """Validate card content against :data:`CARD_SCHEMA` and cross-field rules.

    Raises
    ------
    ModelCardError
        Naming the file and the field that is wrong.
    """
    errors = sorted(jsonschema.Draft202012Validator(CARD_SCHEMA).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        field = ".".join(str(p) for p in err.path) or "(top level)"
        raise ModelCardError(f"model card {path}: field {field!r}: {err.message}")
    stim = data["stimulus"]
    if stim["kind"] == "video" and "n_frames" not in stim:
        raise ModelCardError(f"model card {path}: field 'stimulus.n_frames' is required for video models")
    backbone = data["backbone"]
    needed = [] if "adapter" in backbone else [k for k in ("architecture", "weights", "return_nodes")
                                               if k not in backbone]
    if needed:
        raise ModelCardError(f"model card {path}: field 'backbone' needs {', '.join(map(repr, needed))} (or an "
                             "'adapter')")
    if "options" in backbone and "adapter" not in backbone:
        raise ModelCardError(f"model card {path}: field 'backbone.options' is for adapters; give 'backbone.adapter'")
    shapes = data["backbone"].get("feature_shapes", {})
    unknown = set(shapes) - set(data["backbone"].get("return_nodes", []))
    if unknown:
        raise ModelCardError(f"model card {path}: field 'backbone.feature_shapes' names nodes that are not "
                             f"return nodes: {sorted(unknown)}")
    if data["readout"]["kind"] in PROJECTION_READOUTS and "n_components" not in data["readout"]:
        raise ModelCardError(f"model card {path}: field 'readout.n_components' is required for readout kind "
                             f"{data['readout']['kind']!r}")
    counts = data.get("n_voxels", {})
    extra = set(counts) - set(data["subjects"])
    if extra:
        raise ModelCardError(f"model card {path}: field 'n_voxels' names subjects not in 'subjects': {sorted(extra)}")
    aliased = {a: n for a, n in data.get("roi_aliases", {}).items() if n not in data["rois"] or a in data["rois"]}
    if aliased:
        raise ModelCardError(f"model card {path}: field 'roi_aliases' must map names outside 'rois' to names in "
                             f"'rois'; these do not: {aliased}")
    _check_registered(data, path)
    card = _typed(data, path)
    card.space.space.check_card(card)
    return card


def _check_registered(data: dict[str, Any], path: str) -> None:
    """Format, space kind, group kind and backbone adapter must name registered entries."""
    names = registered_names()
    given = {"format": data.get("format", "native"), "space.kind": data["space"]["kind"],
             "group.kind": data.get("group", {}).get("kind"), "backbone.adapter": data["backbone"].get("adapter")}
    for field, value in given.items():
        if value is not None and value not in names[field]:
            raise ModelCardError(f"model card {path}: field {field!r} is {value!r}; valid: {', '.join(names[field])}"
                                 + close_matches(value, names[field]))


def _parse_card(text: str, path: str) -> ModelCard:
    try:
        data = parse_yaml(text)
    except UnsafeYamlError as exc:
        raise ModelCardError(f"model card {path}: {exc}") from exc
    return validate_card(data, path)


def load_card(path: str | Path) -> ModelCard:
    """Read and validate one YAML model card."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except UnsafeYamlError as exc:
        raise ModelCardError(f"model card {path}: {exc}") from exc
    except OSError as exc:
        raise ModelCardError(f"model card {path}: cannot be read: {exc}") from exc
    return validate_card(data, str(path))


def packaged_cards() -> list[ModelCard]:
    """The cards that ship with berg (the ``berg.model_cards`` package), sorted by model id.

    Read through :mod:`importlib.resources`, so they are found in a wheel, a zip or an editable install alike;
    parsed once per process.
    """
    return list(_packaged_cards())


@functools.cache
def _packaged_cards() -> tuple[ModelCard, ...]:
    folder = resources.files("berg.model_cards")
    cards = [_parse_card(entry.read_text(), f"model_cards/{entry.name}")
             for entry in folder.iterdir() if entry.name.endswith(".yaml")]
    return tuple(sorted(cards, key=lambda c: c.model_id))

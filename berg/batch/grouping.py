"""Units that one backbone pass can serve together: the same stimulus, and models whose backbones are the same.

Two units are grouped when their stimulus (kind, source and options) is the same and their models' backbones
are: architecture, weights, return nodes, preprocessing, stimulus form, device and precision (the card's and the
row's). Groups span subjects and models (BERG's two ViT-B/32 models share one). Each unit of a group keeps its
own outputs, completion record and failure row: when the group's pass fails, its units are run one by one, so a
readout that fails loses nothing of the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..registry import get_card
from .execute import load_model, run_units
from .units import Unit

log = logging.getLogger(__name__)


def backbone_group(unit: Unit, berg_dir: Path | None) -> str:
    """What a unit's model runs before its readout, as text: equal for units one backbone pass can serve."""
    card = get_card(unit.model["model_id"], berg_dir)
    m = unit.model
    # an adapter's networks come from each model's own files: only the same model, subject and selection share them
    own = m if card.backbone.adapter is not None else None
    return json.dumps([card.backbone.architecture, card.backbone.weights, list(card.backbone.return_nodes),
                       card.data.get("preprocessing"), card.stimulus_kind, card.stimulus.n_frames, m["device"],
                       m["precision"], m["backbone_weights"], own], sort_keys=True, default=str)


def _stimulus_key(unit: Unit) -> str:
    return json.dumps([unit.kind, unit.source, unit.options], sort_keys=True, default=str)


def group_units(units: list[Unit], berg_dir: Path | None) -> list[list[Unit]]:
    """``units`` in groups of one stimulus and one backbone, groups of a backbone next to each other (in order of
    first appearance), units in their order."""
    by_backbone: dict[str, dict[str, list[Unit]]] = {}
    backbones: dict[str, str] = {}  # by model key: one card lookup per model, not per unit
    for unit in units:
        key = unit.model_key()
        if key not in backbones:
            backbones[key] = backbone_group(unit, berg_dir)
        by_backbone.setdefault(backbones[key], {}).setdefault(_stimulus_key(unit), []).append(unit)
    return [group for stimuli in by_backbone.values() for group in stimuli.values()]


def run_group(load: Callable[[Unit], Any], units: list[Unit], root: Path, stimulus=None,
              berg_dir: Path | None = None) -> dict[str, Exception | None]:
    """Run a group from :func:`group_units` in one backbone pass; ``load(unit)`` gives a unit's model.

    Returns
    -------
    dict
        ``{uid: None, or the exception that unit failed with}``.
    """
    from ..shared_backbone import SharedBackboneModel

    models, errors = {}, {}
    for unit in units:
        try:
            models[unit.uid] = load(unit)
        except Exception as exc:  # noqa: BLE001  this unit fails; the others go on
            errors[unit.uid] = exc
    ready = [u for u in units if u.uid in models]
    if len(ready) > 1 and len({id(m) for m in models.values()}) == len(ready):
        try:
            run_units(SharedBackboneModel.from_models(models), ready, root, stimulus, berg_dir)
            return {**errors, **{u.uid: None for u in ready}}
        except Exception as exc:  # noqa: BLE001  each unit is tried alone, so one failure takes no other down
            log.warning("the shared pass of %d units failed (%s); running them one by one", len(ready), exc)
    for unit in ready:
        try:
            run_units(models[unit.uid], [unit], root, stimulus, berg_dir)
            errors[unit.uid] = None
        except Exception as exc:  # noqa: BLE001  recorded in the failures table
            errors[unit.uid] = exc
    return {u.uid: errors[u.uid] for u in units}


class ModelCache:
    """The models of the backbone group in use, each loaded once; switching group frees the previous models.

    A model that cannot be loaded is remembered as its error, so that every unit of it fails the same way without
    another try.
    """

    def __init__(self, berg_dir: Path | None):
        self.berg_dir, self.group, self.models = berg_dir, None, {}

    def __call__(self, unit: Unit):
        key = unit.model_key()
        if key not in self.models:  # the models held are those of the group in use
            group = backbone_group(unit, self.berg_dir)
            if group != self.group:
                self.group, self.models = group, {}
            try:
                self.models[key] = load_model(unit, self.berg_dir)
            except Exception as exc:  # noqa: BLE001  re-raised for every unit of this model
                log.warning("cannot load the model of %s: %s", unit.uid, exc)
                self.models[key] = exc
        model = self.models[key]
        if isinstance(model, Exception):
            raise model
        return model

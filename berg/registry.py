"""The registry: model id -> model card, from the packaged cards and a berg_dir's own ``model_cards/``.

Packaged cards are parsed once per process; a berg_dir's cards once per (path, modification time). A berg_dir card
that cannot be read or fails the schema leaves every other model available: it is logged once as a warning, and
asking for the model its file names (``<model_id>.yaml``) raises its :class:`~berg.errors.ModelCardError`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from .cards import ModelCard, load_card, packaged_cards
from .errors import ModelCardError, UnknownModelError, close_matches

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=256)
def _user_card(path: str, mtime_ns: int) -> ModelCard | ModelCardError:
    """One card of a berg_dir, parsed once per (path, mtime): the card, or the error that refused it."""
    try:
        return load_card(path)
    except ModelCardError as exc:
        logger.warning("%s; its model is left out, the others are available", exc)
        return exc


def _berg_dir_cards(berg_dir: str | Path | None) -> tuple[list[ModelCard], dict[str, ModelCardError]]:
    """The valid cards of ``<berg_dir>/model_cards/`` and, by file stem, the errors of the others."""
    folder = None if berg_dir is None else Path(berg_dir) / "model_cards"
    if folder is None or not folder.is_dir():
        return [], {}
    valid, broken = [], {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            found = _user_card(str(path), path.stat().st_mtime_ns)
        except OSError as exc:  # removed or unreadable since the listing
            found = ModelCardError(f"model card {path}: cannot be read: {exc}")
        if isinstance(found, ModelCardError):
            broken[path.stem] = found
        else:
            valid.append(found)
    return valid, broken


def available_cards(berg_dir: str | Path | None = None) -> dict[str, ModelCard]:
    """All valid cards by model id; cards in ``<berg_dir>/model_cards/*.yaml`` add to (and override) the packaged
    ones."""
    cards = {c.model_id: c for c in packaged_cards()}
    cards.update({c.model_id: c for c in _berg_dir_cards(berg_dir)[0]})
    return dict(sorted(cards.items()))


def get_card(model_id: str, berg_dir: str | Path | None = None) -> ModelCard:
    """The card of ``model_id``; the :class:`ModelCardError` of ``<model_id>.yaml`` in the berg_dir when that card
    is broken (even if a packaged card has the id: the berg_dir's was meant), or :class:`UnknownModelError` with
    close matches."""
    broken = _berg_dir_cards(berg_dir)[1]
    if model_id in broken:
        raise broken[model_id]
    cards = available_cards(berg_dir)
    if model_id not in cards:
        raise UnknownModelError(f"model_id={model_id!r} is not in the zoo.{close_matches(model_id, cards)} "
                                f"Available models: {', '.join(cards)}")
    return cards[model_id]


def catalog(berg_dir: str | Path | None = None) -> dict[str, dict]:
    """One summary per model: modality, dataset, stimulus kind, backbone, subjects, number of ROIs."""
    return {
        mid: {"modality": c.modality, "train_dataset": c.train_dataset, "stimulus": c.stimulus_kind,
              "backbone": c.backbone.architecture, "subjects": c.subjects + (["group"] if c.has_group else []),
              "n_rois": len(c.rois), "description": c.description}
        for mid, c in available_cards(berg_dir).items()
    }


def format_catalog(entries: dict[str, dict]) -> str:
    """The catalog as a text table whose columns fit their widest entry."""
    def subjects(subj: list) -> str:
        return f"{subj[0]}-{subj[-1]}" if all(isinstance(s, int) for s in subj) else f"{subj[0]}-{subj[-2]}, {subj[-1]}"

    rows = [("model_id", "stimulus", "backbone", "dataset", "subjects", "rois")]
    rows += [(mid, e["stimulus"], e["backbone"], e["train_dataset"], subjects(e["subjects"]), str(e["n_rois"]))
             for mid, e in entries.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [" ".join(f"{v:<{w}}" for v, w in zip(row, widths)) + f" {row[-1]}" for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])

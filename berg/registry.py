"""The registry: model id -> model card, from the packaged cards and a berg_dir's own ``model_cards/``.

Packaged cards are parsed once per process; a berg_dir's cards once per (path, modification time).
"""

from __future__ import annotations

import functools
from pathlib import Path

from .cards import ModelCard, load_card, packaged_cards
from .errors import UnknownModelError, close_matches


@functools.lru_cache(maxsize=256)
def _user_card(path: str, mtime_ns: int) -> ModelCard:
    """One card of a berg_dir, parsed once per (path, mtime)."""
    return load_card(path)


def available_cards(berg_dir: str | Path | None = None) -> dict[str, ModelCard]:
    """All cards by model id; cards in ``<berg_dir>/model_cards/*.yaml`` add to (and override) the packaged ones."""
    cards = {c.model_id: c for c in packaged_cards()}
    if berg_dir is not None:
        folder = Path(berg_dir) / "model_cards"
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                card = _user_card(str(path), path.stat().st_mtime_ns)
                cards[card.model_id] = card
    return dict(sorted(cards.items()))


def get_card(model_id: str, berg_dir: str | Path | None = None) -> ModelCard:
    """The card of ``model_id``, or :class:`UnknownModelError` with close matches."""
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

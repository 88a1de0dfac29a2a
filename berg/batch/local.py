"""The local engine: every unit in this process, one progress bar, each model loaded once for all its units."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from .execute import load_model, run_unit
from .records import failure
from .units import Unit

log = logging.getLogger(__name__)


def by_model(units: list[Unit]) -> list[list[Unit]]:
    """``units`` grouped by the model they need, groups in order of first appearance."""
    groups: dict[str, list[Unit]] = {}
    for unit in units:
        groups.setdefault(unit.model_key(), []).append(unit)
    return list(groups.values())


def run_local(units: list[Unit], root: Path, berg_dir: Path | None, show_progress: bool = True,
              n_skipped: int = 0) -> list[dict]:
    """Run ``units`` here; return the failures-table rows (a failed unit is logged and the run goes on)."""
    failures: list[dict] = []
    with tqdm(total=len(units) + n_skipped, initial=n_skipped, disable=not show_progress, unit="unit",
              desc="batch") as bar:
        for group in by_model(units):
            try:
                model = load_model(group[0], berg_dir)
            except Exception as exc:  # noqa: BLE001  every unit of this model fails the same way
                log.warning("cannot load the model of %s: %s", group[0].uid, exc)
                failures += [failure(unit, exc) for unit in group]
                bar.update(len(group))
                continue
            for unit in group:
                try:
                    run_unit(model, unit, root, berg_dir=berg_dir)
                except Exception as exc:  # noqa: BLE001  recorded in the failures table
                    log.warning("unit %s failed: %s", unit.uid, exc)
                    failures.append(failure(unit, exc))
                bar.update(1)
            del model
    return failures

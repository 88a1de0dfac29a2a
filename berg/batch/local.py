"""The local engine: every unit in this process, one progress bar, one backbone pass for each group of units that
share a stimulus and a backbone (:mod:`berg.batch.grouping`), each model loaded once for all its units."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from .grouping import ModelCache, group_units, run_group
from .records import failure
from .units import Unit

log = logging.getLogger(__name__)


def run_local(units: list[Unit], root: Path, berg_dir: Path | None, show_progress: bool = True,
              n_skipped: int = 0) -> list[dict]:
    """Run ``units`` here; return the failures-table rows (a failed unit is logged and the run goes on)."""
    failures: list[dict] = []
    load = ModelCache(berg_dir)
    with tqdm(total=len(units) + n_skipped, initial=n_skipped, disable=not show_progress, unit="unit",
              desc="batch") as bar:
        for group in group_units(units, berg_dir):
            errors = run_group(load, group, root, berg_dir=berg_dir)
            for unit in group:
                if errors[unit.uid] is not None:
                    log.warning("unit %s failed: %s", unit.uid, errors[unit.uid])
                    failures.append(failure(unit, errors[unit.uid]))
            bar.update(len(group))
    return failures

"""The Ray engine: Ray Data reads and decodes in CPU tasks, encoders run in actors that each keep a model loaded.

Pipeline: one row per group of units that share a stimulus and a backbone (:mod:`berg.batch.grouping`) ->
``map`` (CPU task: the group's image shard is decoded to pixels once, an array shard read, a film probed; a film
itself streams through the actor, since a whole film does not fit in a task's output) -> ``map_batches`` with
:class:`UnitActor` (``concurrency`` = actors, ``num_gpus`` per actor), one group per call: one backbone pass
and every readout of the group, one result row per unit. Groups come ordered by backbone, so an actor loads a
model when its groups change backbone (once per model per actor when blocks arrive in order). A Python error in a
unit becomes a failures-table row; a crashed worker or actor is restarted and its unit retried (Ray Data's task
retries; ``max_retries`` sets the actors' ``max_restarts`` and ``max_task_retries``).
Afterwards every unit is accounted for from the completion records on disk: one without a record and without
a reported error is a failure too (``WorkerLost``), so nothing is silently lost.

Ray is imported here only, when this engine is chosen.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import OptionalDependencyError
from .execute import read_stimulus
from .grouping import ModelCache, group_units, run_group
from .records import failure, is_done
from .units import Unit

log = logging.getLogger(__name__)
INSTALL = 'pip install "berg[ray]"'


def import_ray():
    """The ``ray`` module with ``ray.data``, or :class:`OptionalDependencyError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise OptionalDependencyError(f"engine='ray' needs Ray Data, which is not installed ({exc}); install it "
                                      f"with: {INSTALL}") from exc
    return ray


def _pack(arrays: list[np.ndarray]) -> tuple[bytes, str]:
    return b"".join(a.tobytes() for a in arrays), json.dumps([[list(a.shape), a.dtype.str] for a in arrays])


def _unpack(pixels: bytes, layout: str) -> list[np.ndarray]:
    arrays, offset = [], 0
    for shape, dtype in json.loads(layout):
        count = int(np.prod(shape))
        arrays.append(np.frombuffer(pixels, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset += count * np.dtype(dtype).itemsize
    return arrays


def decode(row: dict) -> dict:
    """CPU task: read a group's stimulus into ``pixels``/``layout``; an unreadable one into ``error``."""
    from ..stimuli import as_stimulus_set
    from ..video import probe

    unit = Unit.from_dict(json.loads(row["units"])[0])
    out = {"units": row["units"], "pixels": b"", "layout": "[]", "error": ""}
    try:
        if unit.kind == "film":
            probe(unit.source["path"])
        elif "files" in unit.source:  # decoded exactly as encode decodes files: (3, H, W) uint8 each
            batch = as_stimulus_set(unit.source["files"], "image").load(0, len(unit.source["files"]))
            out["pixels"], out["layout"] = _pack([np.asarray(img) for img in batch])
        else:
            out["pixels"], out["layout"] = _pack([np.ascontiguousarray(read_stimulus(unit))])
    except Exception as exc:  # noqa: BLE001  reported as this unit's failure
        out["error"] = json.dumps([type(exc).__name__, str(exc)])
    return out


def _stimulus(unit: Unit, pixels: bytes, layout: str):
    arrays = _unpack(pixels, layout)
    if unit.kind == "film":
        return None
    if "files" not in unit.source:
        return arrays[0]
    from PIL import Image

    return [Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0))) for a in arrays]


class UnitActor:
    """Ray Data actor: keeps the models of the backbone group in use and runs one group of units per call.

    Parameters
    ----------
    root : str
        Output root (shared by every node).
    berg_dir : str or None
        Model files root on the nodes.
    """

    def __init__(self, root: str, berg_dir: str | None):
        self.root, self.berg_dir = Path(root), berg_dir
        self.load = ModelCache(berg_dir)

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {"uid": [], "error_type": [], "message": []}
        for text, pixels, layout, error in zip(batch["units"], batch["pixels"], batch["layout"], batch["error"]):
            units = [Unit.from_dict(u) for u in json.loads(text)]
            if error:
                errors = {u.uid: tuple(json.loads(error)) for u in units}
            else:
                ran = run_group(self.load, units, self.root, stimulus=_stimulus(units[0], pixels, layout),
                                berg_dir=self.berg_dir)
                errors = {uid: ("", "") if exc is None else (type(exc).__name__, str(exc)) for uid, exc in ran.items()}
            for unit in units:
                out["uid"].append(unit.uid)
                out["error_type"].append(errors[unit.uid][0])
                out["message"].append(errors[unit.uid][1])
        return {k: np.array(v, dtype=object) for k, v in out.items()}


def run_ray(units: list[Unit], root: Path, berg_dir: Path | None, settings: dict, address: str | None = None,
            show_progress: bool = True, n_skipped: int = 0) -> list[dict]:
    """Run ``units`` on Ray (the running cluster, ``address``, or a new local one on 127.0.0.1).

    Returns
    -------
    list of dict
        The failures-table rows.
    """
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        options = {"address": address} if address else {"_node_ip_address": "127.0.0.1"}
        ray.init(include_dashboard=False, log_to_driver=False, **options)
    reported: dict[str, tuple[str, str]] = {}
    lost = None
    try:
        if units:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            retries = int(settings["max_retries"])
            groups = group_units(units, berg_dir)
            ds = ray.data.from_items([{"units": json.dumps([u.to_dict() for u in group])} for group in groups],
                                     override_num_blocks=len(groups))
            decoders = ray.data.TaskPoolStrategy(size=int(settings["decode_tasks"] or 2 * settings["actors"]))
            ds = ds.map(decode, num_cpus=settings["cpus_per_decode"], compute=decoders)  # lost tasks are retried
            pool = ray.data.ActorPoolStrategy(size=int(settings["actors"]))
            ds = ds.map_batches(UnitActor, batch_size=1, compute=pool,
                                num_cpus=settings["cpus_per_actor"], num_gpus=settings["num_gpus"] or None,
                                fn_constructor_kwargs={"root": str(root),
                                                       "berg_dir": None if berg_dir is None else str(berg_dir)},
                                max_restarts=retries, max_task_retries=retries)
            with tqdm(total=len(units) + n_skipped, initial=n_skipped, disable=not show_progress, unit="unit",
                      desc="batch (ray)") as bar:
                try:
                    for row in ds.iter_rows():
                        reported[row["uid"]] = (row["error_type"], row["message"])
                        bar.update(1)
                except Exception as exc:  # noqa: BLE001  retries exhausted: the units left are accounted below
                    log.warning("the Ray run stopped early: %s", exc)
                    lost = exc
    finally:
        if started:
            ray.shutdown()
    failures = []
    for unit in units:
        kind, message = reported.get(unit.uid, ("", ""))
        if kind:
            failures.append(failure(unit, message, kind))
        elif unit.uid not in reported and not is_done(root, unit, berg_dir):
            failures.append(failure(unit, lost or "no result came back from the Ray workers", "WorkerLost"))
    return failures

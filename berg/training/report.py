"""Accuracy report of a trained encoder: a JSON summary per ROI and PNG figures."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from .._io import atomic_path, write_json
from .._optional import import_optional
from .metrics import ACCURACY_UNITS


def summarize(metrics: dict[str, np.ndarray], rois: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per ROI (and ``"all"``): voxel count and the median and mean of every metric."""
    groups = {"all": np.arange(len(next(iter(metrics.values())))), **rois}
    out = {}
    for name, idx in groups.items():
        entry: dict = {"n_voxels": int(len(idx))}
        for key, values in metrics.items():
            v = values[idx]
            entry[key] = {"median": float(np.median(v)) if len(v) else None,
                          "mean": float(np.mean(v)) if len(v) else None}
        out[name] = entry
    return out


def check_report_dependencies(mni: bool) -> None:
    """Raise :class:`OptionalDependencyError` now (before any training) when the report's plotting packages are
    missing; ``mni``: the report includes the glass-brain map."""
    import_optional("matplotlib.figure", "train", "training reports")
    if mni:
        import_optional("nilearn.plotting", "train", "the glass-brain map of training reports")


def _figure(figsize: tuple[float, float]):
    """A new ``matplotlib.figure.Figure`` (no pyplot: the caller's backend and figure list stay untouched)."""
    return import_optional("matplotlib.figure", "train", "training reports").Figure(figsize=figsize)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def write_report(folder: str | Path, metrics: dict[str, np.ndarray], rois: dict[str, np.ndarray],
                 voxel_ijk: np.ndarray, grid_shape, affine: np.ndarray, mni: bool, extra: dict | None = None
                 ) -> dict:
    """Write ``summary.json``, ``histograms.png``, ``r_vs_noise_ceiling.png`` (with a noise ceiling) and,
    when ``mni`` is true, ``glass_brain_r.png`` into ``folder``; return the summary.

    Parameters
    ----------
    metrics : dict name -> (n_voxels,) array
    rois : dict name -> voxel indices
    voxel_ijk : (n_voxels, 3) int array, grid_shape (3,), affine (4, 4)
    mni : bool
        The grid is in MNI152 space (the glass-brain map needs it).
    extra : dict, optional
        More fields for the summary (dataset, model id, timings).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"units": {k: ACCURACY_UNITS[k] for k in metrics}, "rois": summarize(metrics, rois), **(extra or {})}
    write_json(folder / "summary.json", summary)
    shown = [k for k in ("correlation", "noise_ceiling", "explained_variance", "coefficient_of_determination")
             if k in metrics]
    fig = _figure((4 * len(shown), 3.2))
    axes = fig.subplots(1, len(shown), squeeze=False)
    for ax, key in zip(axes[0], shown):
        ax.hist(metrics[key], bins=50, color="0.3")
        ax.set_xlabel(key.replace("_", " "))
        ax.set_ylabel("voxels")
    fig.tight_layout()
    _save(fig, folder / "histograms.png")
    if "noise_ceiling" in metrics:
        fig = _figure((4.2, 4))
        ax = fig.subplots()
        ax.scatter(np.sqrt(metrics["noise_ceiling"]), metrics["correlation"], s=3, alpha=0.4, color="k")
        ax.plot([0, 1], [0, 1], "r--", lw=1, label="r = sqrt(noise ceiling)")
        ax.set_xlabel("sqrt(noise ceiling)  (best achievable r)")
        ax.set_ylabel("test r")
        ax.legend(loc="upper left")
        fig.tight_layout()
        _save(fig, folder / "r_vs_noise_ceiling.png")
    if mni:
        plotting = import_optional("nilearn.plotting", "train", "the glass-brain map of training reports")
        vol = np.zeros(tuple(grid_shape), dtype=np.float32)
        vol[tuple(np.asarray(voxel_ijk).T)] = metrics["correlation"]
        fig = _figure((8.5, 2.6))  # three 2.6-inch projections and a colour bar
        plotting.plot_glass_brain(nib.Nifti1Image(vol, affine), figure=fig, colorbar=True, plot_abs=False,
                                  title="test r")
        _save(fig, folder / "glass_brain_r.png")
    return summary

"""The surface space: outputs are vertices of a cortical mesh, per hemisphere (fsaverage and its kin).

Coordinates: ``hemisphere`` (n,) int (0 left, 1 right) and ``vertex`` (n,) int, the vertex of each column in its
hemisphere's mesh. Layout: ``mesh`` (the card's template, e.g. ``fsaverage``), ``hemispheres`` (``lh``, ``rh``)
and ``n_vertices`` per hemisphere (the card's ``space.n_vertices``). Selection, as BERG's:
``{"lh_vertices": binary (n_vertices,), "rh_vertices": binary (n_vertices,)}``; a hemisphere whose key is
absent is taken whole. :func:`berg.encode` returns BERG's tuple ``(lh, rh)`` of (n_stimuli, n_selected) arrays.

The first 10,242 vertices of fsaverage (163,842 per hemisphere) are the vertices of fsaverage5, nested
icosahedra: :meth:`SurfaceSpace.on_mesh` takes the values on a coarser mesh of that family exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, InvalidSelectionError, ModelCardError, ModelFormatError
from .base import OutputSpace, binary_mask, output_lookup

HEMISPHERES = ("lh", "rh")
#: Vertices per hemisphere of FreeSurfer's fsaverage family (icosahedron orders 3 to 7).
FSAVERAGE_VERTICES = {"fsaverage3": 642, "fsaverage4": 2562, "fsaverage5": 10242, "fsaverage6": 40962,
                      "fsaverage": 163842}
_NOISE_CEILING = "noise_ceiling"


def _hemisphere_of(metadata: Mapping) -> np.ndarray:
    coordinates = metadata.get("coordinates") or {}
    if "hemisphere" not in coordinates:
        kind = (metadata.get("space") or {}).get("kind")
        raise InvalidArgumentError(f"metadata describes outputs in the {kind!r} space, not vertices of a surface")
    return np.asarray(coordinates["hemisphere"])


class SurfaceSpace(OutputSpace):
    """Vertices of a two-hemisphere mesh (see the module docstring)."""

    kind = "surface"
    mask_keys = ("lh_vertices", "rh_vertices")
    coordinate_names = ("hemisphere", "vertex")
    image_suffix = ".func.gii"

    @property
    def n_vertices(self) -> int:
        return int(self.spec.fields["n_vertices"])

    def check_card(self, card: Any) -> None:
        self.check_card_fields(self.spec, card, {"n_vertices": "vertices per hemisphere"})
        n = self.spec.fields["n_vertices"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ModelCardError(f"model card {card.path}: field 'space.n_vertices' is {n!r}; expected a "
                                       "positive integer")

    def n_outputs(self, card: Any, subject: int | str) -> int | None:
        return None

    def check_masks(self, selection: Mapping, card: Any, subject: int | str) -> None:
        for key in self.mask_keys:
            if selection.get(key) is not None:
                binary_mask(key, selection[key], self.n_vertices, "the vertices of one hemisphere")

    def check_layout(self, meta: Any, where: str) -> None:
        super().check_layout(meta, where)
        hemisphere, vertex = meta.arrays["hemisphere"], meta.arrays["vertex"]
        if hemisphere.size and not np.isin(hemisphere, (0, 1)).all():
            raise ModelFormatError(f"{where}: 'hemisphere' must hold 0 (left) or 1 (right)")
        if vertex.size and (vertex.min() < 0 or vertex.max() >= self.n_vertices):
            raise ModelFormatError(f"{where}: 'vertex' must lie in 0..{self.n_vertices - 1}, the card's mesh")

    def whole_layout(self, card: Any, subject: int, rng: np.random.Generator) -> tuple[dict, dict]:
        """Every vertex of both hemispheres, left first."""
        n = self.n_vertices
        return {"hemisphere": np.repeat(np.arange(2, dtype=np.int8), n),
                "vertex": np.tile(np.arange(n, dtype=np.int32), 2)}, {}

    def mask_outputs(self, selection: Mapping, meta: Any) -> np.ndarray:
        lookup = output_lookup(meta.arrays, self.coordinate_names, (2, self.n_vertices))
        chosen = []
        for h, key in enumerate(self.mask_keys):
            if selection.get(key) is None:
                outputs = lookup[h][lookup[h] >= 0]
            else:
                vertices = binary_mask(key, selection[key], self.n_vertices, "the vertices of one hemisphere")
                outputs = lookup[h, vertices]
                if (outputs < 0).any():
                    raise InvalidSelectionError(f"selection[{key!r}] chooses {int((outputs < 0).sum())} vertices "
                                                "the model has no output for")
            chosen.append(outputs)
        return np.concatenate(chosen)

    def describe_masks(self, selection: Mapping, outputs: np.ndarray, meta: Any) -> dict:
        return {key: ("all" if selection.get(key) is None else f"{int(np.sum(selection[key]))} vertices")
                for key in self.mask_keys}

    def layout(self, meta: Any) -> dict[str, Any]:
        return {"mesh": self.spec.template, "hemispheres": list(HEMISPHERES), "n_vertices": self.n_vertices}

    @classmethod
    def arrange(cls, responses: np.ndarray, metadata: Mapping) -> tuple[np.ndarray, np.ndarray]:
        """BERG's ``(lh, rh)``: the columns of each hemisphere, (n_stimuli, n_selected) each."""
        hemisphere = _hemisphere_of(metadata)
        return responses[:, hemisphere == 0], responses[:, hemisphere == 1]

    @classmethod
    def on_mesh(cls, values: np.ndarray, metadata: Mapping, mesh: str | None = None, fill_value: float = np.nan
                ) -> dict[str, np.ndarray]:
        """Column values on every vertex of each hemisphere: ``{"lh": (n_rows, n), "rh": (n_rows, n)}``.

        Parameters
        ----------
        values : (n_columns,) or (n_rows, n_columns) array
        metadata : dict
            The model's metadata.
        mesh : str, optional
            A coarser mesh of the model's family (``"fsaverage5"``): its ``n`` first vertices are the model's.
        fill_value : float
            Where no column is.
        """
        values = np.atleast_2d(np.asarray(values, dtype=np.float32))
        layout, coordinates = metadata["layout"], metadata["coordinates"]
        n = int(layout["n_vertices"]) if mesh is None else FSAVERAGE_VERTICES.get(mesh, 0)
        if not 0 < n <= int(layout["n_vertices"]):
            raise InvalidArgumentError(f"mesh={mesh!r} is not valid: expected one of "
                                       f"{', '.join(m for m, k in FSAVERAGE_VERTICES.items() if k <= layout['n_vertices'])}")
        hemisphere, vertex = _hemisphere_of(metadata), np.asarray(coordinates["vertex"])
        out = {}
        for h, name in enumerate(HEMISPHERES):
            keep = (hemisphere == h) & (vertex < n)
            grid = np.full((values.shape[0], n), fill_value, dtype=np.float32)
            grid[:, vertex[keep]] = values[:, keep]
            out[name] = grid
        return out

    @classmethod
    def berg_view(cls, meta: Any, accuracy: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """BERG's ``{"fmri": {...}, "encoding_models": {...}}`` for a surface subject.

        ``fmri``: every per-output descriptor split by hemisphere (``lh_ncsnr`` …) and the ROIs' vertices per
        hemisphere (``lh_{mesh}_rois`` {name: (n,) vertex indices}). ``encoding_models``: every other descriptor as
        stored (``train_img_num`` …) and the accuracy per hemisphere in BERG's units: ``lh_correlation``,
        ``lh_r2``, ``lh_noise_ceiling`` (a fraction, zeros replaced by 1e-14) and ``lh_explained_variance``
        (percent: ``100 * r2 / noise_ceiling``, capped at 100).
        """
        hemisphere, vertex = meta.arrays["hemisphere"], meta.arrays["vertex"]
        mesh = (meta.info.get("space") or {}).get("template") or "surface"
        fmri: dict[str, Any] = {}
        encoding_models: dict[str, Any] = {}
        for name, values in meta.descriptors().items():
            if values.shape[:1] == (meta.n_outputs,):
                fmri.update({f"{h}_{name}": values[hemisphere == i] for i, h in enumerate(HEMISPHERES)})
            else:
                encoding_models[name] = values
        for i, h in enumerate(HEMISPHERES):
            fmri[f"{h}_{mesh}_rois"] = {}
            for roi in meta.roi_names:
                outputs = meta.row_voxel[meta.roi_rows(roi)]
                fmri[f"{h}_{mesh}_rois"][roi] = vertex[outputs[hemisphere[outputs] == i]].astype(np.int64)
        per_output = {k: v.astype(np.float64) for k, v in accuracy.items()}
        if _NOISE_CEILING in per_output:
            per_output[_NOISE_CEILING] = np.where(per_output[_NOISE_CEILING] == 0, 1e-14, per_output[_NOISE_CEILING])
            if "r2" in per_output and "explained_variance" in per_output:
                per_output["explained_variance"] = np.minimum(per_output["r2"] / per_output[_NOISE_CEILING] * 100,
                                                              100.0)
        for name, values in per_output.items():
            encoding_models.update({f"{h}_{name}": values[hemisphere == i] for i, h in enumerate(HEMISPHERES)})
        return {"fmri": fmri, "encoding_models": encoding_models}

    @classmethod
    def plot(cls, values: np.ndarray, metadata: Mapping, title: str | None = None, mesh: str = "fsaverage5"):
        """Draw one row of values on nilearn's bundled fsaverage5 (inflated; lateral and medial views of both
        hemispheres), with no download: the model's first vertices of each hemisphere are fsaverage5's, so the
        values are taken as they are. Returns a matplotlib Figure (no pyplot)."""
        from .._optional import import_optional

        figure_module = import_optional("matplotlib.figure", "plot", "drawing responses on a surface")
        colors = import_optional("matplotlib.colors", "plot", "drawing responses on a surface")
        cm = import_optional("matplotlib.cm", "plot", "drawing responses on a surface")
        datasets = import_optional("nilearn.datasets", "plot", "drawing responses on a surface")
        plotting = import_optional("nilearn.plotting", "plot", "drawing responses on a surface")
        on_mesh = cls.on_mesh(values, metadata, mesh=mesh)
        surfaces = datasets.load_fsaverage(mesh).inflated.parts
        finite = np.concatenate([v[np.isfinite(v)] for v in on_mesh.values()])
        vmax = float(np.abs(finite).max()) if finite.size else 1.0
        fig = figure_module.Figure(figsize=(8, 6))
        for row, view in enumerate(("lateral", "medial")):
            for col, (hemi, side) in enumerate(zip(HEMISPHERES, ("left", "right"))):
                ax = fig.add_subplot(2, 2, 2 * row + col + 1, projection="3d")
                plotting.plot_surf_stat_map(surfaces[side], np.nan_to_num(on_mesh[hemi][0]), hemi=side, view=view,
                                            axes=ax, figure=fig, colorbar=False, vmax=vmax, cmap="RdBu_r")
                ax.set_title(f"{side} hemisphere, {view}", fontsize=9)
        scale = cm.ScalarMappable(norm=colors.Normalize(-vmax, vmax), cmap="RdBu_r")
        fig.colorbar(scale, ax=fig.axes, shrink=0.5, label=str(metadata.get("units") or "response"))
        fig.suptitle(title or f"{metadata.get('model_id')}, subject {metadata.get('subject')} ({mesh})")
        return fig

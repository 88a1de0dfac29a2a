"""Readout: the affine map from backbone features to voxels, folded into the fewest matmuls, in torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from .errors import InvalidArgumentError


def fold_scaler_projection(components: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                           node_dims: Mapping[str, int], center: np.ndarray | None = None
                           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fold ``StandardScaler`` and a PCA/SVD projection into per-node blocks.

    ``z = components @ ((f - mean) / scale - center)`` becomes ``z = sum_n f_n @ W_n.T + b``.

    Parameters
    ----------
    components : (k, d) array
        PCA or truncated-SVD components over the concatenated features.
    mean, scale : (d,) arrays
        The scaler's mean and scale (a zero scale counts as 1, as in scikit-learn).
    node_dims : mapping node -> d_node
        Return nodes in concatenation order; their dims sum to d.
    center : (d,) array, optional
        PCA's ``mean_`` (in scaled units); ``None`` for a truncated SVD.

    Returns
    -------
    blocks : dict node -> (k, d_node) float32
    bias : (k,) float32
    """
    scale = np.where(scale == 0, 1.0, scale)
    offset = mean / scale + (0.0 if center is None else center)
    bias = -(components.astype(np.float64) @ offset.astype(np.float64))
    blocks, start = {}, 0
    for node, dim in node_dims.items():
        cols = slice(start, start + dim)
        blocks[node] = (components[:, cols] / scale[cols]).astype(np.float32)
        start += dim
    if start != components.shape[1]:
        raise InvalidArgumentError(f"node_dims add up to {start}, but components have {components.shape[1]} "
                                   "columns; they must be equal")
    return blocks, bias.astype(np.float32)


class Readout(torch.nn.Module):
    """Features -> responses: per-node blocks, an optional second linear map, and an optional post stage.

    Parameters
    ----------
    weight : (n_out, n_in) tensor
    bias : (n_out,) tensor
    node_dims : mapping node -> d_node
        Return nodes in concatenation order and their flattened sizes.
    projection : dict node -> (k, d_node) tensor, optional
        A shared projection (scaler and PCA/SVD folded); then ``n_in == k``. Without it ``n_in == sum(d_node)``.
    projection_bias : (k,) tensor, optional
    post : callable, optional
        A nonlinear stage on (B, n_out) responses (e.g. group z-scoring).

    Notes
    -----
    Each node's block multiplies that node's features and the products are summed, so multi-million-dimensional
    features are never concatenated. When projection-then-map costs more than one direct map
    (``n_out * d < k * (d + n_out)``), the two are folded into one, in float64 then cast to float32.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, node_dims: Mapping[str, int],
                 projection: Mapping[str, torch.Tensor] | None = None, projection_bias: torch.Tensor | None = None,
                 post: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.nodes = list(node_dims)
        self.post = post
        d = sum(node_dims.values())
        if projection is None:
            starts = np.cumsum([0, *node_dims.values()])
            blocks = {n: weight[:, starts[i]:starts[i + 1]] for i, n in enumerate(self.nodes)}
            weight, block_bias = None, None
        elif weight.shape[0] * d < weight.shape[1] * (d + weight.shape[0]):
            w64 = weight.double()
            blocks = {n: (w64 @ projection[n].double()).float() for n in self.nodes}
            bias = (w64 @ projection_bias.double() + bias.double()).float()
            weight, block_bias = None, None
        else:
            blocks, block_bias = dict(projection), projection_bias
        frozen = lambda t: torch.nn.Parameter(t.float().contiguous(), requires_grad=False)  # noqa: E731
        self.blocks = torch.nn.ParameterDict({self._key(n): frozen(b) for n, b in blocks.items()})
        self.block_bias = None if block_bias is None else frozen(block_bias)
        self.weight = None if weight is None else frozen(weight)
        self.bias = frozen(bias)

    @staticmethod
    def _key(node: str) -> str:
        return node.replace(".", "__")

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Responses (B, n_out) float32 from ``{node: (B, ...)}`` features."""
        x = None
        for n in self.nodes:
            f = features[n].flatten(1).to(self.bias.dtype)
            term = f @ self.blocks[self._key(n)].T
            x = term if x is None else x + term
        if self.block_bias is not None:
            x = x + self.block_bias
        y = torch.addmm(self.bias, x, self.weight.T) if self.weight is not None else x + self.bias
        return self.post(y) if self.post is not None else y

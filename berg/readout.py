"""Readout: the affine map from backbone features to voxels, folded into the fewest matmuls, in torch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch

from . import validation
from .errors import InvalidArgumentError

DEFAULT_READOUT_MB = 256.0


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

    @property
    def bytes_per_stimulus(self) -> int:
        """Bytes one stimulus occupies in a readout batch: its float32 features, intermediate and responses."""
        d = sum(b.shape[1] for b in self.blocks.values())
        k = 0 if self.weight is None else self.weight.shape[1]
        return 4 * (d + k + self.bias.shape[0])

    @staticmethod
    def _key(node: str) -> str:
        return node.replace(".", "__")

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Responses (B, n_out) float32 from ``{node: (B, ...)}`` features.

        Biases are added inside the matmuls and the node terms accumulate in place: no extra pass over the output.
        """
        return self.finish(self.project(features))

    def project(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The per-node blocks applied to ``{node: (B, ...)}`` features: (B, k) with a projection, else the
        responses before any post stage."""
        x = None
        for n in self.nodes:
            f = features[n].flatten(1).to(self.bias.dtype)
            block = self.blocks[self._key(n)].T
            if x is not None:
                x.addmm_(f, block)
            elif self.weight is None:
                x = torch.addmm(self.bias, f, block)
            else:
                x = f @ block if self.block_bias is None else torch.addmm(self.block_bias, f, block)
        return x

    def finish(self, projected: torch.Tensor) -> torch.Tensor:
        """Responses (B, n_out) from what :meth:`project` gave: the second map, where there is one, and the post
        stage."""
        y = projected if self.weight is None else torch.addmm(self.bias, projected, self.weight.T)
        return self.post(y) if self.post is not None else y

    def share_projection(self, other: "Readout") -> None:
        """Use ``other``'s projection blocks instead of this readout's own equal ones (the same file read by two
        subjects), so that both hold one copy and a :class:`berg.shared_backbone.MultiReadout` applies it once."""
        if self.weight is None or other.weight is None or self.nodes != other.nodes or any(
                self.blocks[k].shape != other.blocks[k].shape for k in self.blocks):
            raise InvalidArgumentError("only two readouts with a projection of the same shape can share it")
        self.blocks, self.block_bias = other.blocks, other.block_bias


def readout_capacity(readout: Readout, readout_mb: float) -> int:
    """Stimuli per readout batch: as many as fit in ``readout_mb`` MiB (see :attr:`Readout.bytes_per_stimulus`).

    At least one: a single stimulus larger than the bound is read out alone.
    """
    mb = validation.positive_number("readout_mb", readout_mb, unit="MiB")
    return max(1, int(mb * 2**20) // readout.bytes_per_stimulus)


class FeatureBuffer:
    """Backbone features gathered across backbone batches; the readout runs once per full buffer.

    On a CPU the readout is bound by reading its weights (e.g. a 100 x 4,084,096 projection, 1.6 GB), so applying
    it to many stimuli at once costs little more than to one. The buffer is allocated once, on the features'
    device, and never grows.

    Parameters
    ----------
    readout : Readout
    capacity : int
        Stimuli held (from :func:`readout_capacity`).
    """

    def __init__(self, readout: Readout, capacity: int):
        self.readout, self.capacity = readout, int(capacity)
        self.buffers: dict[str, torch.Tensor] = {}
        self.n = 0

    @torch.inference_mode()
    def push(self, features: Mapping[str, torch.Tensor]) -> Iterator[torch.Tensor]:
        """Copy one backbone batch ``{node: (B, ...)}`` in; yield responses (capacity, n_out) each time it fills."""
        if not self.buffers:
            dtype = self.readout.bias.dtype
            self.buffers = {n: torch.empty((self.capacity, features[n][0].numel()), dtype=dtype,
                                           device=features[n].device) for n in self.readout.nodes}
        size = next(iter(features.values())).shape[0]
        start = 0
        while start < size:
            take = min(self.capacity - self.n, size - start)
            for n, buffer in self.buffers.items():
                buffer[self.n:self.n + take] = features[n][start:start + take].flatten(1)
            self.n, start = self.n + take, start + take
            if self.n == self.capacity:
                yield self.flush()

    @torch.inference_mode()
    def flush(self) -> torch.Tensor | None:
        """Responses (n, n_out) for the ``n`` stimuli held (None when empty); empties the buffer."""
        if self.n == 0:
            return None
        responses = self.readout({n: buffer[:self.n] for n, buffer in self.buffers.items()})
        self.n = 0
        return responses

"""Multi-resolution grid encoding (Instant-NGP hash grid), pure PyTorch with a tiny-cuda-nn fast path.

Contract shared by both backends (tiny-cuda-nn's "HashGrid" conventions):
    input  x: [N, 3] in [0, 1]^3 (float)
    output  : [N, levels * features_per_level] float32, level-major (level 0's features first)
Level l has scale s_l = base_resolution * b^l - 1 with b = (finest/base)^(1/(levels-1)); a point sits at
vertex coordinate p = x * s_l + 0.5, the level has ceil(s_l) + 1 vertices per axis, and its features are
the trilinear interpolation of the 8 surrounding vertices' table rows. Levels whose vertex count fits in
the table are indexed densely (no collisions); finer ones are hashed with the primes (1, 2654435761,
805459861) XOR-ed and taken modulo the (power-of-two) table size.

The torch twin keeps the index arithmetic in int32 (two's-complement wrap-around gives the same low bits
as tiny-cuda-nn's uint32 hash) and uses ``embedding_bag`` for the weighted 8-corner gather, with a
hand-written backward (one ``index_add_``), which is ~5x faster on CPU than autograd through ``table[idx]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..backends import pick_backend

_PRIMES = (1, 2654435761 - 2**32, 805459861)  # int32 views of the uint32 primes


@dataclass
class GridConfig:
    """Multi-resolution grid encoding. Defaults are the official Latent-NeRF ones (docs/method.md §1)."""

    levels: int = 16
    """Number of resolution levels."""
    features_per_level: int = 2
    """Features stored per vertex and level."""
    base_resolution: int = 16
    """Vertices per axis of the coarsest level."""
    finest_resolution: int = 2048
    """Vertices per axis of the finest level; fixes the per-level scale (2^(7/15) for 16 → 2048)."""
    log2_table_size: int = 19
    """Each level's table has at most 2^log2_table_size rows."""
    init_range: float = 1e-4
    """Table entries start uniform in ±init_range."""
    backend: Literal["auto", "torch", "tcnn"] = "auto"
    """"auto" takes tiny-cuda-nn on CUDA when importable, else the torch twin."""

    def __post_init__(self) -> None:
        for name in ("levels", "features_per_level", "base_resolution", "finest_resolution", "log2_table_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GridConfig.{name} must be a positive integer, got {value!r}")
        if self.finest_resolution < self.base_resolution:
            raise ValueError(
                f"GridConfig.finest_resolution must be >= base_resolution ({self.base_resolution}), "
                f"got {self.finest_resolution}"
            )
        if self.log2_table_size > 30:
            raise ValueError(f"GridConfig.log2_table_size must be <= 30, got {self.log2_table_size}")

    @property
    def per_level_scale(self) -> float:
        if self.levels == 1:
            return 1.0
        return math.exp(math.log(self.finest_resolution / self.base_resolution) / (self.levels - 1))

    @property
    def output_dim(self) -> int:
        return self.levels * self.features_per_level

    def level_scales(self) -> list[float]:
        return [self.base_resolution * self.per_level_scale**level - 1.0 for level in range(self.levels)]


class _WeightedGather(torch.autograd.Function):
    """Σ_c w[i, c] * table[idx[i, c]] for one or more (idx [N, L, 8], w [N, L, 8]) parts, concatenated
    as [N, Σ L·F]; the gradient goes to the table only (positions carry none). One backward for all parts:
    one table-sized gradient instead of one per part."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, *parts: torch.Tensor) -> torch.Tensor:
        outputs = []
        for idx, w in zip(parts[0::2], parts[1::2]):
            n, levels = idx.shape[:2]
            gathered = nn.functional.embedding_bag(idx.reshape(-1, 8), table, per_sample_weights=w.reshape(-1, 8), mode="sum")
            outputs.append(gathered.reshape(n, levels * table.shape[1]))
        ctx.save_for_backward(table, *parts)
        return torch.cat(outputs, 1) if len(outputs) > 1 else outputs[0]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        table, *parts = ctx.saved_tensors
        features = table.shape[1]
        grad_table = None
        if ctx.needs_input_grad[0]:
            grad_table = torch.zeros_like(table)
            column = 0
            for idx, w in zip(parts[0::2], parts[1::2]):
                n, levels = idx.shape[:2]
                g = grad_out[:, column : column + levels * features].reshape(n * levels, 1, features)
                column += levels * features
                contrib = (g * w.reshape(-1, 8, 1)).reshape(-1, features)
                grad_table.index_add_(0, idx.reshape(-1), contrib.to(table.dtype))
        return (grad_table,) + (None,) * len(parts)


def _corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """[..., 3] fractional positions -> [..., 8] trilinear weights, corner c = (cx + 2 cy + 4 cz)."""
    wx = torch.stack([1 - frac[..., 0], frac[..., 0]], -1)
    wy = torch.stack([1 - frac[..., 1], frac[..., 1]], -1)
    wz = torch.stack([1 - frac[..., 2], frac[..., 2]], -1)
    return (wz[..., :, None, None] * wy[..., None, :, None] * wx[..., None, None, :]).flatten(-3)


def _pairs(lo: torch.Tensor, hi_limit: torch.Tensor | None) -> torch.Tensor:
    """[..., L] lower vertex coordinate -> [..., L, 2] (lower, upper), upper clamped to hi_limit."""
    up = lo + 1
    if hi_limit is not None:
        up = torch.minimum(up, hi_limit)
    return torch.stack([lo, up], -1)


class TorchGridEncoding(nn.Module):
    """Pure-PyTorch multi-resolution grid encoding (see the module docstring for the contract)."""

    def __init__(self, config: GridConfig) -> None:
        super().__init__()
        self.config = config
        table_size = 2**config.log2_table_size
        scales = config.level_scales()
        resolutions = [math.ceil(s) + 1 for s in scales]
        dense = [r**3 <= table_size for r in resolutions]
        if any(not d for d in dense[: sum(dense)]) or dense != sorted(dense, reverse=True):
            raise AssertionError("dense levels must come first")  # scales grow, so this cannot happen
        sizes = [r**3 if d else table_size for r, d in zip(resolutions, dense)]
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.n_dense = sum(dense)
        self.resolutions = resolutions
        self.level_offsets = offsets
        self.table = nn.Parameter(torch.empty(offsets[-1], config.features_per_level).uniform_(-config.init_range, config.init_range))
        i32 = torch.int32
        nd = self.n_dense
        self.register_buffer("scale_dense", torch.tensor(scales[:nd], dtype=torch.float32), persistent=False)
        self.register_buffer("scale_hashed", torch.tensor(scales[nd:], dtype=torch.float32), persistent=False)
        self.register_buffer("res_dense", torch.tensor(resolutions[:nd], dtype=i32), persistent=False)
        self.register_buffer("offset_dense", torch.tensor(offsets[:nd], dtype=i32), persistent=False)
        self.register_buffer("offset_hashed", torch.tensor(offsets[nd:-1], dtype=i32), persistent=False)
        self.table_mask = table_size - 1

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def _dense_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = x[:, None, :] * self.scale_dense[:, None] + 0.5  # [N, Ld, 3]
        low = pos.floor()
        frac = pos - low
        low = low.to(torch.int32)
        res = self.res_dense  # [Ld]
        hi = res[None, :] - 1
        ix = _pairs(low[..., 0], hi)
        iy = _pairs(low[..., 1], hi) * res[:, None]
        iz = _pairs(low[..., 2], hi) * (res * res)[:, None]
        idx = (iz[..., :, None, None] + iy[..., None, :, None] + ix[..., None, None, :]).flatten(-3)
        return idx + self.offset_dense[:, None], _corner_weights(frac)

    def _hashed_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = x[:, None, :] * self.scale_hashed[:, None] + 0.5  # [N, Lh, 3]
        low = pos.floor()
        frac = pos - low
        low = low.to(torch.int32)
        hx = _pairs(low[..., 0], None) * _PRIMES[0]
        hy = _pairs(low[..., 1], None) * _PRIMES[1]
        hz = _pairs(low[..., 2], None) * _PRIMES[2]
        idx = (hz[..., :, None, None] ^ hy[..., None, :, None] ^ hx[..., None, None, :]).flatten(-3)
        return (idx & self.table_mask) + self.offset_hashed[:, None], _corner_weights(frac)

    def indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3] in [0,1] -> (table rows [N, L, 8] int64, trilinear weights [N, L, 8])."""
        x = x.to(torch.float32)
        parts = []
        if self.n_dense:
            parts.append(self._dense_indices(x))
        if self.n_dense < self.config.levels:
            parts.append(self._hashed_indices(x))
        idx = torch.cat([p[0] for p in parts], 1).long()
        w = torch.cat([p[1] for p in parts], 1)
        return idx, w

    def vertex_rows(self, level: int, ijk: torch.Tensor) -> torch.Tensor:
        """Table rows of integer vertices ``ijk`` [M, 3] of one level (for tests and inspection)."""
        ijk = ijk.to(torch.int32)
        if level < self.n_dense:
            r = self.resolutions[level]
            return (ijk[:, 0] + ijk[:, 1] * r + ijk[:, 2] * r * r).long() + self.level_offsets[level]
        h = (ijk[:, 0] * _PRIMES[0]) ^ (ijk[:, 1] * _PRIMES[1]) ^ (ijk[:, 2] * _PRIMES[2])
        return (h & self.table_mask).long() + self.level_offsets[level]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] in [0,1]^3 -> features [N, levels * features_per_level]."""
        x = x.detach().to(torch.float32)
        parts = []
        # dense and hashed levels keep separate index tensors: concatenating [N, L, 8] indices costs more;
        # embedding_bag and index_add_ take the int32 indices as they are (a .long() copy cost ≈ 10 %)
        for make, count in ((self._dense_indices, self.n_dense), (self._hashed_indices, self.config.levels - self.n_dense)):
            if count:
                idx, w = make(x)
                parts += [idx, w.to(self.table.dtype)]
        return _WeightedGather.apply(self.table, *parts).float()


def level_rows(config: GridConfig) -> list[int]:
    """Table rows of each level: res³ for dense levels, the table size for hashed ones."""
    table = 2**config.log2_table_size
    return [min((math.ceil(s) + 1) ** 3, table) for s in config.level_scales()]


def tcnn_to_table(params: torch.Tensor, config: GridConfig) -> torch.Tensor:
    """tiny-cuda-nn HashGrid parameters (levels concatenated, each padded to a multiple of 8 rows) ->
    the twin's table [rows, F]. Both index a level's vertices the same way (x fastest, or the hash)."""
    flat = params.reshape(-1, config.features_per_level)
    parts, start = [], 0
    for rows in level_rows(config):
        parts.append(flat[start : start + rows])
        start += (rows + 7) // 8 * 8
    return torch.cat(parts)


def table_to_tcnn(table: torch.Tensor, config: GridConfig) -> torch.Tensor:
    """Inverse of :func:`tcnn_to_table` (padding rows are zero), flattened as tiny-cuda-nn stores it."""
    parts, start = [], 0
    for rows in level_rows(config):
        padded = table.new_zeros((rows + 7) // 8 * 8, table.shape[1])
        padded[:rows] = table[start : start + rows]
        parts.append(padded)
        start += rows
    return torch.cat(parts).reshape(-1)


class TcnnGridEncoding(nn.Module):
    """tiny-cuda-nn HashGrid behind the same contract (CUDA only; output cast to float32).

    Its state dict holds the twin's ``table`` layout, not tiny-cuda-nn's padded parameters, so a field
    trained with tiny-cuda-nn loads on a CPU-only machine (and the other way round).
    """

    def __init__(self, config: GridConfig) -> None:
        super().__init__()
        import tinycudann as tcnn  # probed by make_grid_encoding before we get here

        self.config = config
        self.encoding = tcnn.Encoding(
            n_input_dims=3,
            encoding_config={
                "otype": "HashGrid",
                "n_levels": config.levels,
                "n_features_per_level": config.features_per_level,
                "log2_hashmap_size": config.log2_table_size,
                "base_resolution": config.base_resolution,
                "per_level_scale": config.per_level_scale,
            },
            dtype=torch.float32,
        )
        with torch.no_grad():
            self.encoding.params.uniform_(-config.init_range, config.init_range)
        self._register_state_dict_hook(TcnnGridEncoding._to_table)
        self._register_load_state_dict_pre_hook(self._from_table)

    @staticmethod
    def _to_table(module, state: dict, prefix: str, local_metadata) -> None:
        params = state.pop(prefix + "encoding.params")
        state[prefix + "table"] = tcnn_to_table(params, module.config)

    def _from_table(self, state: dict, prefix: str, *args) -> None:
        if prefix + "table" in state:
            state[prefix + "encoding.params"] = table_to_tcnn(state.pop(prefix + "table"), self.config).to(self.encoding.params)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x.contiguous()).float()


def make_grid_encoding(config: GridConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The grid encoding for ``config`` on ``device``: tiny-cuda-nn where usable, else the torch twin."""
    device = torch.device(device)
    backend = pick_backend(config.backend, "tcnn", "tinycudann", device)
    module = TcnnGridEncoding(config) if backend == "tcnn" else TorchGridEncoding(config)
    return module.to(device)

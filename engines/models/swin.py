"""Swin Transformer layers over a fixed (D, H, W) token grid, for images (D = 1) and clips.

Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV
2021, and its video version (Liu et al., "Video Swin Transformer", CVPR 2022). Tokens are
channels-last, ``(N, D, H, W, C)``; an image is the case D = 1, so one implementation serves
both of EDMDBN's backbones.

A model built for one input size knows every stage's token grid, so each block fixes its window,
shift, relative-position index and shifted-window mask once, at construction (Video Swin's rule:
an axis no longer than the window gets a single window covering it and no shift). Tracing and
ONNX export therefore see constants, and no padding is needed: a grid axis longer than the window
must be a multiple of it, which the constructor checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "DropPath",
    "Grid",
    "PatchEmbed",
    "PatchMerging",
    "SwinBlock",
    "SwinStage",
    "WindowAttention",
    "fit_window",
    "init_swin_weights",
    "relative_position_index",
    "shifted_window_mask",
    "window_merge",
    "window_partition",
]

Grid = tuple[int, int, int]
# Added to the attention logits of token pairs that a cyclic shift made neighbours although they
# are not (Swin's value: large enough to vanish in the softmax, finite so exports stay clean).
MASKED = -100.0


def fit_window(grid: Grid, window: Grid, shift: Grid) -> tuple[Grid, Grid]:
    """The window and shift a block actually uses on ``grid`` (Video Swin's ``get_window_size``).

    An axis no longer than the window is covered by one window and not shifted; a longer axis
    must be a multiple of the window (no padding here).
    """
    used_window, used_shift = [], []
    for axis, (size, win, sh) in enumerate(zip(grid, window, shift, strict=True)):
        if size <= win:
            used_window.append(size)
            used_shift.append(0)
        elif size % win:
            raise ValueError(f"token grid {grid}: axis {axis} ({size}) is not a multiple of the window ({win})")
        else:
            used_window.append(win)
            used_shift.append(sh)
    return tuple(used_window), tuple(used_shift)


def window_partition(x: torch.Tensor, grid: Grid, window: Grid) -> torch.Tensor:
    """(N, D, H, W, C) -> (N * windows, wd * wh * ww, C), windows in (d, h, w) raster order."""
    (d, h, w), (wd, wh, ww) = grid, window
    channels = x.shape[-1]
    x = x.reshape(-1, d // wd, wd, h // wh, wh, w // ww, ww, channels)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, channels)


def window_merge(windows: torch.Tensor, grid: Grid, window: Grid) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (N * windows, wd * wh * ww, C) -> (N, D, H, W, C)."""
    (d, h, w), (wd, wh, ww) = grid, window
    channels = windows.shape[-1]
    x = windows.reshape(-1, d // wd, h // wh, w // ww, wd, wh, ww, channels)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(-1, d, h, w, channels)


def relative_position_index(window: Grid) -> torch.Tensor:
    """(L, L) index into a ((2wd-1)(2wh-1)(2ww-1), heads) bias table for each pair of the L window tokens."""
    axes = [torch.arange(size) for size in window]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij")).flatten(1)  # (3, L)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (L, L, 3), each in -(w-1)..w-1
    relative = relative + torch.tensor([size - 1 for size in window])  # 0..2w-2
    spans = [2 * size - 1 for size in window]
    return relative[..., 0] * spans[1] * spans[2] + relative[..., 1] * spans[2] + relative[..., 2]


def shifted_window_mask(grid: Grid, window: Grid, shift: Grid) -> torch.Tensor | None:
    """(windows, L, L) logits offset: 0 inside one region of the shifted grid, MASKED across regions.

    After a cyclic shift by ``-shift``, the last window along an axis holds tokens from both ends
    of the map; they must not attend to each other. None when nothing is shifted.
    """
    if not any(shift):
        return None
    regions = torch.zeros((1, *grid, 1))
    label = 0
    slices = [
        (slice(0, -win), slice(-win, -sh), slice(-sh, None)) if sh else (slice(None),)
        for win, sh in zip(window, shift, strict=True)
    ]
    for d in slices[0]:
        for h in slices[1]:
            for w in slices[2]:
                regions[:, d, h, w, :] = label
                label += 1
    labels = window_partition(regions, grid, window).squeeze(-1)  # (windows, L)
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, MASKED)


def init_swin_weights(module: nn.Module) -> None:
    """Swin's initialisation (use with ``Module.apply``): linear weights ~ truncated N(0, 0.02), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a sample's residual branch with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device) < keep
        return x * mask / keep


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative-position bias."""

    def __init__(self, dim: int, num_heads: int, window: Grid) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{dim} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        table_rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_rows, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, C) window tokens (B = N * windows) -> (B, L, C); ``mask`` is (windows, L, L) or None."""
        length, dim = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, L, head_dim)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        logits = logits + bias.reshape(length, length, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            logits = logits.reshape(-1, windows, self.num_heads, length, length) + mask[None, :, None]
            logits = logits.reshape(-1, self.num_heads, length, length)
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, length, dim)
        return self.proj(out)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention then MLP, each with a residual; tokens (N, D, H, W, C)."""

    def __init__(
        self, dim: int, num_heads: int, grid: Grid, window: Grid, shift: Grid, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.window, self.shift = fit_window(self.grid, tuple(window), tuple(shift))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, self.window)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.register_buffer("attn_mask", shifted_window_mask(self.grid, self.window, self.shift), persistent=False)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        dims = (1, 2, 3)
        shifted = any(self.shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in self.shift), dims=dims)
        windows = self.attn(window_partition(x, self.grid, self.window), self.attn_mask)
        x = window_merge(windows, self.grid, self.window)
        return torch.roll(x, shifts=self.shift, dims=dims) if shifted else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._attend(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Sequential):
    """``depth`` blocks on one grid, alternating regular and half-window-shifted windows."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        grid: Grid,
        window: Grid,
        mlp_ratio: float,
        drop_paths: Sequence[float],
    ) -> None:
        if len(drop_paths) != depth:
            raise ValueError(f"{depth} blocks but {len(drop_paths)} drop-path rates")
        half = tuple(size // 2 for size in window)
        no_shift = (0, 0, 0)
        super().__init__(*(
            SwinBlock(dim, num_heads, grid, window, half if i % 2 else no_shift, mlp_ratio, drop_paths[i])
            for i in range(depth)
        ))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 spatial neighbourhood and project 4C -> 2C: (N, D, H, W, C) -> (N, D, H/2, W/2, 2C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Swin's order: (even, even), (odd, even), (even, odd), (odd, odd) rows/columns.
        parts = (x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2])
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> ``embed_dim`` tokens, then LayerNorm (Swin's ``patch_norm``).

    ``patch`` of 2 sizes (h, w) embeds images (N, C, H, W) into a grid with D = 1; of 3 sizes
    (t, h, w) embeds clips (N, C, T, H, W) into D = T / t. Output (N, D, H/h, W/w, embed_dim).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch: tuple[int, ...]) -> None:
        super().__init__()
        if len(patch) not in (2, 3):
            raise ValueError(f"patch must be (h, w) or (t, h, w), got {patch}")
        conv = nn.Conv2d if len(patch) == 2 else nn.Conv3d
        self.proj = conv(in_channels, embed_dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if x.dim() == 4:
            x = x.unsqueeze(2)  # an image is a clip of one token step
        return self.norm(x.permute(0, 2, 3, 4, 1))

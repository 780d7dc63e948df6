"""Image operations in torch that reproduce OpenCV's numerics, for the TV-L1 port.

The torch TV-L1 solver must agree with ``cv2.optflow.DualTVL1OpticalFlow`` to a small
fraction of a pixel, so the pieces it borrows from OpenCV are reimplemented here with
OpenCV's conventions rather than torch's:

* ``resize_bilinear``: ``cv2.resize(..., INTER_LINEAR)`` on float images: half-pixel
  centres, edge replication, output size rounded to nearest (torch floors), and the
  coordinate scale taken from the requested factor, not from the rounded size.
* ``remap_bicubic``: ``cv2.remap(..., INTER_CUBIC)`` with the default constant-zero
  border and OpenCV's cubic kernel (a = -0.75).
* ``centered_gradient``: OpenCV TV-L1's central differences with halved one-sided
  differences on the border.
* ``median_blur``: ``cv2.medianBlur`` (replicated border) as a selection network of
  elementwise min/max, which is exact and far cheaper than ``torch.median`` over
  unfolded windows.

All functions work on any leading batch/channel dimensions: ``(..., H, W)``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# OpenCV's bicubic kernel parameter (imgproc's interpolateCubic).
_CUBIC_A = -0.75


def opencv_resized_length(length: int, factor: float) -> int:
    """Output length of ``cv2.resize(src, None, fx=factor, ...)``: rounded half to even."""
    return int(round(length * factor))


@functools.lru_cache(maxsize=64)
def _linear_taps(in_len: int, out_len: int, scale: float, device_str: str):
    """Source indices and weights of OpenCV's INTER_LINEAR along one axis.

    ``scale`` is source pixels per destination pixel. Computed in float64 then cast,
    as OpenCV computes ``fx = (float)((dx + 0.5) * scale - 0.5)``.
    """
    dst = torch.arange(out_len, dtype=torch.float64)
    pos = ((dst + 0.5) * scale - 0.5).to(torch.float32)
    left = torch.floor(pos)
    frac = pos - left
    left = left.to(torch.int64)
    # OpenCV: below 0 -> use pixel 0 fully; at or beyond the last pixel -> use it fully.
    below = left < 0
    frac = torch.where(below, torch.zeros_like(frac), frac)
    left = torch.where(below, torch.zeros_like(left), left)
    beyond = left >= in_len - 1
    frac = torch.where(beyond, torch.zeros_like(frac), frac)
    left = torch.where(beyond, torch.full_like(left, in_len - 1), left)
    right = torch.clamp(left + 1, max=in_len - 1)
    device = torch.device(device_str)
    return left.to(device), right.to(device), (1.0 - frac).to(device), frac.to(device)


def _resize_axis(x: torch.Tensor, dim: int, out_len: int, scale: float) -> torch.Tensor:
    left, right, w_left, w_right = _linear_taps(x.shape[dim], out_len, scale, str(x.device))
    shape = [1] * x.dim()
    shape[dim] = out_len
    return x.index_select(dim, left) * w_left.view(shape) + x.index_select(dim, right) * w_right.view(shape)


def resize_bilinear(
    x: torch.Tensor,
    size: tuple[int, int] | None = None,
    factor: float | None = None,
) -> torch.Tensor:
    """``cv2.resize`` with INTER_LINEAR on a float tensor ``(..., H, W)``.

    Give either ``factor`` (like ``fx=fy=factor``: size rounded, coordinates scaled by
    exactly ``1/factor``) or ``size=(height, width)`` (coordinates scaled by the size ratio).
    """
    height, width = x.shape[-2], x.shape[-1]
    if factor is not None:
        out_h, out_w = opencv_resized_length(height, factor), opencv_resized_length(width, factor)
        scale_y = scale_x = 1.0 / factor
    elif size is not None:
        out_h, out_w = size
        scale_y, scale_x = height / out_h, width / out_w
    else:
        raise ValueError("resize_bilinear needs size or factor")
    # OpenCV resizes rows (horizontal) first, then blends rows vertically.
    x = _resize_axis(x, x.dim() - 1, out_w, scale_x)
    return _resize_axis(x, x.dim() - 2, out_h, scale_y)


def _cubic_weights(frac: torch.Tensor) -> torch.Tensor:
    """OpenCV's 4 cubic weights for a fractional offset, stacked on a new last dim."""
    a = _CUBIC_A
    x1 = frac + 1.0
    w0 = ((a * x1 - 5.0 * a) * x1 + 8.0 * a) * x1 - 4.0 * a
    w1 = ((a + 2.0) * frac - (a + 3.0)) * frac * frac + 1.0
    r = 1.0 - frac
    w2 = ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0
    w3 = 1.0 - w0 - w1 - w2
    return torch.stack((w0, w1, w2, w3), dim=-1)


_REMAP_PAD = 4  # zero border wide enough that clamped far-away taps read zeros only


def remap_bicubic(images: torch.Tensor, map_x: torch.Tensor, map_y: torch.Tensor) -> torch.Tensor:
    """``cv2.remap(img, map_x, map_y, INTER_CUBIC)`` (border: constant 0) for a batch.

    images: ``(B, C, H, W)``; map_x, map_y: ``(B, H, W)`` absolute source coordinates in
    pixels. Returns ``(B, C, H, W)``: ``out[b, c, y, x] = images[b, c](map_y, map_x)``.
    """
    batch, channels, height, width = images.shape
    pad = _REMAP_PAD
    padded = F.pad(images, (pad, pad, pad, pad))
    padded_w = width + 2 * pad
    flat = padded.reshape(batch, channels, -1)

    base_x = torch.floor(map_x)
    base_y = torch.floor(map_y)
    wx = _cubic_weights(map_x - base_x)  # (B, H, W, 4)
    wy = _cubic_weights(map_y - base_y)
    # Clamp so that all four taps of a far-away point land in the zero border.
    ix = base_x.clamp_(-3, width + 1).to(torch.int64) + (pad - 1)
    iy = base_y.clamp_(-3, height + 1).to(torch.int64) + (pad - 1)
    taps = torch.arange(4, device=images.device)
    cols = ix.unsqueeze(-1) + taps  # (B, H, W, 4)
    rows = iy.unsqueeze(-1) + taps
    index = (rows.unsqueeze(-1) * padded_w + cols.unsqueeze(-2)).reshape(batch, 1, -1)  # (B,1,H*W*16)
    values = torch.gather(flat, 2, index.expand(batch, channels, -1))
    weights = (wy.unsqueeze(-1) * wx.unsqueeze(-2)).reshape(batch, 1, -1, 16)
    values = values.reshape(batch, channels, -1, 16)
    return (values * weights).sum(-1).reshape(batch, channels, height, width)


def centered_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV TV-L1's ``centeredGradient``: ``0.5*(x[i+1]-x[i-1])``, border ``0.5*(one-sided)``.

    Replicating the border by one pixel gives exactly OpenCV's border formulas.
    """
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, x.shape[-2], x.shape[-1])
    p = F.pad(flat, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])
    dy = 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])
    return dx.reshape(*lead, *x.shape[-2:]), dy.reshape(*lead, *x.shape[-2:])


# ---------------------------------------------------------------------------------------
# Median filter as a min/max selection network.


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sorting network for ``n`` (a power of two) wires."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _sorting_ops(wires: list[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """Compare-exchange ops sorting ``wires`` ascending, and the wire holding each rank.

    Batcher's network for the next power of two, with the virtual extra wires set to +inf
    and folded away (a comparison against +inf is a no-op or a relabelling).
    """
    n = 1 << max(0, math.ceil(math.log2(len(wires))))
    holder: list[int | None] = list(wires) + [None] * (n - len(wires))  # None = +inf
    ops = []
    for i, j in _batcher_pairs(n):
        if holder[j] is None:
            continue
        if holder[i] is None:
            holder[i], holder[j] = holder[j], None
            continue
        ops.append((holder[i], holder[j]))
    return ops, [w for w in holder if w is not None]


@functools.lru_cache(maxsize=8)
def _median_program(ksize: int):
    """Selection network for the median of a ``ksize x ksize`` window with sorted columns.

    Wire ``r * ksize + c`` holds the r-th smallest value of window column c. Sorting
    each rank-row as well makes the window a matrix sorted along rows and columns; then
    the element at (i, j) has at least (i+1)(j+1)-1 values below it and (k-i)(k-j)-1
    above, which rules out all but a few candidates, and the median is a known order
    statistic of those candidates. Returns (ops, output wire) with ops
    ``(lo, hi, need_lo, need_hi)`` pruned backwards to what the output depends on.
    """
    k = ksize
    rank = (k * k - 1) // 2
    ops: list[tuple[int, int]] = []
    rank_wire = {}
    for r in range(k):
        row_ops, order = _sorting_ops([r * k + c for c in range(k)])
        ops += row_ops
        for c, wire in enumerate(order):
            rank_wire[(r, c)] = wire
    candidates = [
        (i, j) for i in range(k) for j in range(k) if (i + 1) * (j + 1) <= rank + 1 and (k - i) * (k - j) <= rank + 1
    ]
    surely_below = sum(1 for i in range(k) for j in range(k) if (k - i) * (k - j) > rank + 1)
    cand_ops, order = _sorting_ops([rank_wire[c] for c in candidates])
    ops += cand_ops
    out = order[rank - surely_below]
    needed = {out}
    program = []
    for lo, hi in reversed(ops):
        need_lo, need_hi = lo in needed, hi in needed
        if need_lo or need_hi:
            program.append((lo, hi, need_lo, need_hi))
            needed |= {lo, hi}
    program.reverse()
    return program, out


def _run_sort(values: list[torch.Tensor], ops: list[tuple[int, int]]) -> None:
    for lo, hi in ops:
        a, b = values[lo], values[hi]
        values[lo], values[hi] = torch.minimum(a, b), torch.maximum(a, b)


def median_blur(x: torch.Tensor, ksize: int) -> torch.Tensor:
    """``cv2.medianBlur(x, ksize)`` for float tensors ``(..., H, W)`` (replicated border)."""
    if ksize % 2 != 1 or ksize < 3:
        raise ValueError(f"median ksize must be odd and >= 3, got {ksize}")
    half = ksize // 2
    lead = x.shape[:-2]
    height, width = x.shape[-2:]
    p = F.pad(x.reshape(-1, 1, height, width), (half, half, half, half), mode="replicate")[:, 0]
    # Sort each vertical run of ksize values once; neighbouring windows share them.
    column = [p[:, r : r + height, :] for r in range(ksize)]
    col_ops, col_order = _sorting_ops(list(range(ksize)))
    _run_sort(column, col_ops)
    column = [column[w] for w in col_order]
    program, out = _median_program(ksize)
    wires: dict[int, torch.Tensor] = {}
    for r in range(ksize):
        for c in range(ksize):
            wires[r * ksize + c] = column[r][:, :, c : c + width]
    for lo, hi, need_lo, need_hi in program:
        a, b = wires[lo], wires[hi]
        if need_lo:
            wires[lo] = torch.minimum(a, b)
        if need_hi:
            wires[hi] = torch.maximum(a, b)
    return wires[out].reshape(*lead, height, width)

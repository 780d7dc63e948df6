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


def _cubic_weights(frac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's 4 cubic weights for a fractional offset."""
    a = _CUBIC_A
    x1 = frac + 1.0
    w0 = ((a * x1 - 5.0 * a) * x1 + 8.0 * a) * x1 - 4.0 * a
    w1 = ((a + 2.0) * frac - (a + 3.0)) * frac * frac + 1.0
    r = 1.0 - frac
    w2 = ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0
    w3 = 1.0 - w0 - w1 - w2
    return w0, w1, w2, w3


_REMAP_PAD = 4  # zero border wide enough that clamped far-away taps read zeros only
_TAPS = 16  # the 4 x 4 bicubic neighbourhood, tap k = 4 * row + column
_TAPS_AT_ONCE_MAX = 16384  # output elements up to which all taps are gathered at once (op overhead wins)


def _lanewise_order(lanes: int) -> list[list[int]]:
    """Taps grouped as torch's vectorised CPU ``sum`` adds 16 contiguous values.

    Each vector lane l adds taps l, l + lanes, ... (starting from 0); then the lanes are
    added in order onto 0: ``(((0 + lane0) + lane1) + lane2) + ...``.
    """
    return [list(range(lane, _TAPS, lanes)) for lane in range(lanes)]


def _sum_lanewise(tap, lanes: int) -> torch.Tensor:
    """Sum ``tap(0) ... tap(15)`` with exactly the additions of :func:`_lanewise_order`.

    The leading ``0 +`` only matters for signed zeros: a sum of -0 values is +0 there.
    """
    total = None
    for taps in _lanewise_order(lanes):
        lane_sum = tap(taps[0])
        for k in taps[1:]:
            lane_sum += tap(k)
        total = lane_sum.add_(0.0) if total is None else total.add_(lane_sum)
    return total


@functools.lru_cache(maxsize=1)
def _cpu_sum_lanes() -> int | None:
    """Vector width (8 with AVX2, 16 with AVX512) of torch's CPU float32 ``sum`` over 16 values.

    ``remap_bicubic`` once summed its 16 products with ``.sum(-1)`` on a tap-last tensor;
    it now adds them one tap at a time (no 16x-sized temporaries), with the same additions,
    so it checks on a probe which order this torch build uses. None: neither matches.
    """
    gen = torch.Generator().manual_seed(0)
    scales = torch.logspace(-4, 4, _TAPS)[torch.randperm(_TAPS, generator=gen)]
    probe = torch.randn(4096, _TAPS, generator=gen) * scales
    probe[0] = -0.0  # signed zeros: 0 + -0 is +0
    expected = probe.sum(-1)
    for lanes in (8, 16):
        summed = _sum_lanewise(lambda k: probe[:, k].clone(), lanes)
        if torch.equal(summed.view(torch.int32), expected.view(torch.int32)):
            return lanes
    return None


def _multiply(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``values * weights``, in place unless float64 weights promote float32 values."""
    return values.mul_(weights) if weights.dtype == values.dtype else values * weights


def remap_bicubic(images: torch.Tensor, map_x: torch.Tensor, map_y: torch.Tensor) -> torch.Tensor:
    """``cv2.remap(img, map_x, map_y, INTER_CUBIC)`` (border: constant 0) for a batch.

    images: ``(B, C, H, W)``; map_x, map_y: ``(B, H, W)`` absolute source coordinates in
    pixels. Returns ``(B, C, H, W)``: ``out[b, c, y, x] = images[b, c](map_y, map_x)``.
    Each output is the sum of 16 products ``image * (wy * wx)``, added in the order of
    torch's ``.sum(-1)`` over a tap-last tensor: large float32 batches on the CPU add them
    one tap at a time in that order (no temporaries 16x the output, whose page faults
    dominated), the rest build that tensor (fewer ops).
    """
    batch, channels, height, width = images.shape
    pad = _REMAP_PAD
    padded_w = width + 2 * pad
    flat = F.pad(images, (pad, pad, pad, pad)).reshape(batch, channels, -1)

    base_x = torch.floor(map_x)
    base_y = torch.floor(map_y)
    wx = _cubic_weights((map_x - base_x).reshape(batch, 1, -1))  # 4 x (B, 1, H*W)
    wy = _cubic_weights((map_y - base_y).reshape(batch, 1, -1))
    # Clamp so that all four taps of a far-away point land in the zero border.
    ix = base_x.clamp_(-3, width + 1).to(torch.int64).reshape(batch, 1, -1)
    iy = base_y.clamp_(-3, height + 1).to(torch.int64).reshape(batch, 1, -1)
    top_left = (iy + (pad - 1)) * padded_w + (ix + (pad - 1))

    fast = images.device.type == "cpu" and images.dtype == map_x.dtype == map_y.dtype == torch.float32
    lanes = _cpu_sum_lanes() if fast else None
    if lanes is not None and batch * channels * height * width > _TAPS_AT_ONCE_MAX:
        # Large: one tap at a time, so that no temporary is 16 times the output.
        def tap(k: int) -> torch.Tensor:
            row, col = divmod(k, 4)
            index = (top_left + (row * padded_w + col)).expand(batch, channels, -1)
            return _multiply(torch.gather(flat, 2, index), wy[row] * wx[col])

        out = _sum_lanewise(tap, lanes)
    else:
        # Small (fewest ops), or another device or dtype: all taps on a tap-last dim, torch's sum.
        # Made by kernels, not copied from the host: this runs inside CUDA graph capture (tvl1_graph).
        taps = torch.arange(_TAPS, device=images.device)
        offsets = (taps // 4) * padded_w + taps % 4
        index = (top_left.unsqueeze(-1) + offsets).reshape(batch, 1, -1).expand(batch, channels, -1)
        values = torch.gather(flat, 2, index).reshape(batch, channels, -1, _TAPS)
        weights = torch.stack(wy, dim=-1).unsqueeze(-1) * torch.stack(wx, dim=-1).unsqueeze(-2)
        out = _multiply(values, weights.reshape(batch, 1, -1, _TAPS)).sum(-1)
    return out.reshape(batch, channels, height, width)


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

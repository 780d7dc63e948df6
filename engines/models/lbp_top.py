"""LBP-TOP + SVM: local binary patterns on three orthogonal planes of a grey clip, a linear SVM on top.

Zhao & Pietikäinen, "Dynamic texture recognition using local binary patterns with an
application to facial expressions", IEEE TPAMI 29(6), 2007, the hand-crafted baseline of the
micro-expression datasets (SMIC, CASME II, MEGC2019). Every voxel of the clip is compared with
``P`` neighbours on a circle (bilinearly interpolated) in each of its three planes: XY
(appearance), XT (horizontal motion) and YT (vertical motion); the ``P`` comparisons form a
code, codes are mapped to the ``P(P-1)+3`` uniform-pattern labels (59 for P = 8), and each
plane's labels are counted in each of ``blocks x blocks`` spatial blocks. The normalised
histograms are concatenated and classified by a linear SVM.

Input: ``ClipSpec(frames=10, anchors="onset_apex_offset", size=128, color="gray",
interpolation="tim")``: the onset..offset clip resampled to 10 frames by the temporal
interpolation model (the SMIC baseline's TIM10), grey, 0..1, (N, 10, 1, 128, 128).

Everything is torch (comparisons, a lookup table, scatter-added counts), so the model exports
to ONNX with its SVM. ``closed_form = True``: the trainer calls :meth:`LBPTOP.fit_closed_form`
instead of running epochs. See ``docs/models/lbp-top.md``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engines.clip_spec import ClipSpec
from engines.models.blocks import block_assignment
from engines.models.linear_svm import DescriptorSVM, LinearSVMHead
from engines.models.registry import ModelCfg, class_builder, register_model
from engines.models.ststnet import MEGC2019_LABELS

__all__ = [
    "LBPTOP",
    "LBPTOPFeatures",
    "PLANES",
    "circle_offsets",
    "lbp_top",
    "lbp_top_cfg",
    "uniform_bins",
    "uniform_pattern_table",
]

# The three planes, each as (row axis, column axis) of a (N, T, H, W) clip: XY samples a circle
# in the image (rows y, columns x); XT and YT an ellipse with time as the row axis.
PLANES = {"xy": (2, 3), "xt": (1, 3), "yt": (1, 2)}


def uniform_bins(points: int) -> int:
    """Number of labels of non-rotation-invariant uniform patterns: P(P-1) + 3 (59 for P = 8)."""
    return points * (points - 1) + 3


def uniform_pattern_table(points: int) -> torch.Tensor:
    """(2**P,) int64: code -> uniform-pattern label, numbered as scikit-image's ``"nri_uniform"``.

    A code is uniform when its circular bit string has at most two 0/1 transitions. Label 0 is
    all zeros; ``P(P-1) + 1`` all ones; a pattern of ``n`` ones (0 < n < P) starting at
    rotation ``r`` gets ``1 + (n - 1) P + r``; every non-uniform code shares the last label,
    ``P(P-1) + 2``.
    """
    table = torch.empty(2**points, dtype=torch.int64)
    for code in range(2**points):
        bits = [(code >> i) & 1 for i in range(points)]
        transitions = sum(bits[i] != bits[(i + 1) % points] for i in range(points))
        ones = sum(bits)
        if transitions > 2:
            label = points * (points - 1) + 2
        elif ones == 0:
            label = 0
        elif ones == points:
            label = points * (points - 1) + 1
        else:
            first_one, first_zero = bits.index(1), bits.index(0)
            rotation = ones - first_zero if first_one == 0 else points - first_one
            label = 1 + (ones - 1) * points + rotation
        table[code] = label
    return table


def circle_offsets(points: int, radius_rows: float, radius_cols: float) -> list[tuple[float, float]]:
    """(row, column) offsets of the ``P`` neighbours, as scikit-image samples them.

    Neighbour ``p`` (bit ``2**p`` of the code) sits at angle ``2 pi p / P`` counter-clockwise from
    the +column direction: ``(-R_rows sin, R_cols cos)``, rounded to 5 decimals so that the
    axis neighbours land exactly on pixels.
    """
    offsets = []
    for p in range(points):
        angle = 2 * math.pi * p / points
        offsets.append((round(-radius_rows * math.sin(angle), 5) + 0.0, round(radius_cols * math.cos(angle), 5) + 0.0))
    return offsets


def _bilinear_corners(row: float, col: float) -> list[tuple[int, int, float]]:
    """The pixels (integer row, column offsets) and weights that bilinearly interpolate at (row, col); zero
    weights are left out, so a neighbour on the pixel grid is that one pixel."""
    r0, c0 = math.floor(row), math.floor(col)
    fr, fc = row - r0, col - c0
    corners = [(r0, c0, (1 - fr) * (1 - fc)), (r0, c0 + 1, (1 - fr) * fc), (r0 + 1, c0, fr * (1 - fc)),
               (r0 + 1, c0 + 1, fr * fc)]
    return [(r, c, w) for r, c, w in corners if w > 0]


class LBPTOPFeatures(nn.Module):
    """LBP-TOP histograms of grey clips: (N, T, H, W) -> (N, blocks * blocks * 3 * bins).

    Codes are computed for every voxel whose neighbours lie inside the clip in all three planes
    (``ceil(radius_t)`` frames and ``ceil(radius_xy)`` pixels in from each border), the voxels
    Zhao & Pietikäinen use. A voxel belongs to the block of its (y, x) position in the full
    frame (``floor(i * blocks / size)``); each plane's histogram in a block is divided by the
    block's number of voxels, so it sums to 1. Layout: block by block (row-major), then the
    planes XY, XT, YT, then the labels.
    """

    def __init__(self, frames: int, size: int, blocks: int, points: int, radius_xy: float, radius_t: float) -> None:
        super().__init__()
        if not 1 <= points <= 16:
            raise ValueError(f"points must be 1..16 (the lookup table has 2**points entries), got {points}")
        if radius_xy <= 0 or radius_t <= 0:
            raise ValueError(f"radii must be > 0, got radius_xy={radius_xy}, radius_t={radius_t}")
        self.points, self.blocks = points, blocks
        self.bins = uniform_bins(points)
        self.margin_t, self.margin_xy = math.ceil(radius_t), math.ceil(radius_xy)
        self.core_t = frames - 2 * self.margin_t
        self.core_xy = size - 2 * self.margin_xy
        if self.core_t < 1 or self.core_xy < 1:
            raise ValueError(f"a {frames}-frame {size}x{size} clip has no voxel with all neighbours inside for "
                             f"radius_t={radius_t}, radius_xy={radius_xy}")
        radii = {1: radius_t, 2: radius_xy, 3: radius_xy}
        # Per plane and neighbour: the (dt, dy, dx) shifts and weights that interpolate it.
        self.neighbours: dict[str, list[list[tuple[tuple[int, int, int], float]]]] = {}
        for name, (row_axis, col_axis) in PLANES.items():
            samples = []
            for row, col in circle_offsets(points, radii[row_axis], radii[col_axis]):
                corners = []
                for dr, dc, weight in _bilinear_corners(row, col):
                    shift = [0, 0, 0]
                    shift[row_axis - 1], shift[col_axis - 1] = dr, dc
                    corners.append((tuple(shift), weight))
                samples.append(corners)
            self.neighbours[name] = samples
        self.register_buffer("patterns", uniform_pattern_table(points), persistent=False)
        self.register_buffer("bit_values", 2 ** torch.arange(points, dtype=torch.int64), persistent=False)
        inside = slice(self.margin_xy, size - self.margin_xy)
        block_of = block_assignment(size, blocks)[inside].argmax(dim=1)  # (core_xy,) block index per row/column
        block_index = block_of[:, None] * blocks + block_of[None, :]
        self.register_buffer("bucket_base", (block_index * self.bins).flatten(), persistent=False)
        voxels = torch.bincount(block_index.flatten(), minlength=blocks * blocks).float() * self.core_t
        self.register_buffer("block_voxels", voxels, persistent=False)

    @property
    def num_features(self) -> int:
        return self.blocks * self.blocks * len(PLANES) * self.bins

    def _shifted(self, clips: torch.Tensor, shift: tuple[int, int, int]) -> torch.Tensor:
        """The core of ``clips`` (N, T, H, W) moved by ``shift`` (dt, dy, dx) voxels."""
        dt, dy, dx = shift
        t0, s0 = self.margin_t + dt, self.margin_xy
        return clips[:, t0 : t0 + self.core_t, s0 + dy : s0 + dy + self.core_xy, s0 + dx : s0 + dx + self.core_xy]

    def codes(self, clips: torch.Tensor, plane: str) -> torch.Tensor:
        """Raw LBP codes (N, core_t, core_xy, core_xy) in 0..2**P - 1 of one plane.

        Bit ``p`` is set when neighbour ``p`` is at least the centre. The interpolated neighbour
        is compared as ``sum_k w_k (pixel_k - centre)``, so equal pixels compare equal exactly
        (a flat patch sets every bit, whatever the interpolation weights).
        """
        centre = self._shifted(clips, (0, 0, 0))
        code = torch.zeros_like(centre, dtype=torch.int64)
        for bit, corners in enumerate(self.neighbours[plane]):
            difference = sum(weight * (self._shifted(clips, shift) - centre) for shift, weight in corners)
            code = code + (difference >= 0).to(torch.int64) * self.bit_values[bit]
        return code

    def labels(self, clips: torch.Tensor, plane: str) -> torch.Tensor:
        """Uniform-pattern labels (N, core_t, core_xy, core_xy) in 0..bins - 1 of one plane."""
        return self.patterns[self.codes(clips, plane)]

    def histograms(self, clips: torch.Tensor, plane: str) -> torch.Tensor:
        """(N, blocks * blocks, bins): each block's label counts over its voxels, divided by their number."""
        labels = self.labels(clips, plane)
        buckets = (labels + self.bucket_base.view(1, 1, self.core_xy, self.core_xy)).flatten(1)
        counts = torch.zeros(labels.shape[0], self.blocks * self.blocks * self.bins, dtype=clips.dtype,
                             device=clips.device)
        counts = counts.scatter_add(1, buckets, torch.ones_like(buckets, dtype=clips.dtype))
        return counts.view(-1, self.blocks * self.blocks, self.bins) / self.block_voxels.view(1, -1, 1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        planes = [self.histograms(clips, plane) for plane in PLANES]
        return torch.stack(planes, dim=2).flatten(1)


def lbp_top_cfg(label_names: tuple[str, ...], frames: int, size: int) -> ModelCfg:
    """The input contract: a TIM-resampled grey onset..offset clip of ``frames`` x ``size`` x ``size``."""
    spec = ClipSpec(frames=frames, anchors="onset_apex_offset", size=size, color="gray", interpolation="tim")
    return ModelCfg(
        name="lbp_top",
        input_size=spec.sample_shape,
        channel_order="GRAY",
        channels=spec.channels,
        value_range=(0.0, 1.0),
        mean=None,
        std=None,
        motion=(f"none computed: the onset..offset clip resampled to {frames} frames by the temporal "
                "interpolation model; LBP-TOP's XT and YT planes see the motion"),
        label_names=tuple(label_names),
        source_url="https://doi.org/10.1109/TPAMI.2007.1110",
        paper=("G. Zhao, M. Pietikäinen, Dynamic texture recognition using local binary patterns with an "
               "application to facial expressions, IEEE TPAMI 29(6) 915-928, 2007"),
        license_note="reimplemented from the paper; cite the paper",
        protocol="leave-one-subject-out",
        clip=spec,
    )


class LBPTOP(DescriptorSVM):
    """LBP-TOP features of a grey clip, classified by a linear SVM (fitted, not trained).

    TIM10 grey clip, 5x5 blocks, P = 8, radii 1: 4,425 values.
    """

    feature_batch = 16  # clips per no-grad pass when extracting the SVM's training features

    def __init__(
        self,
        label_names: tuple[str, ...] = MEGC2019_LABELS,
        frames: int = 10,
        size: int = 128,
        blocks: int = 5,
        points: int = 8,
        radius_xy: float = 1.0,
        radius_t: float = 1.0,
        svm_c: float = 1.0,
    ) -> None:
        super().__init__()
        self.cfg = lbp_top_cfg(tuple(label_names), frames, size)
        self.num_classes = self.cfg.num_classes
        self.features = LBPTOPFeatures(frames, size, blocks, points, radius_xy, radius_t)
        self.num_features = self.features.num_features
        self.svm = LinearSVMHead(self.num_features, self.num_classes, svm_c, standardize=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, 1, S, S) grey clip -> (N, blocks * blocks * 3 * bins) LBP-TOP vector."""
        if not torch.jit.is_tracing() and (x.dim() != 5 or tuple(x.shape[1:]) != tuple(self.cfg.input_size)):
            raise ValueError(f"lbp_top expects clips of shape (N, {', '.join(map(str, self.cfg.input_size))}), "
                             f"got {tuple(x.shape)}")
        return self.features(x[:, :, 0])



lbp_top = register_model(class_builder(LBPTOP, "lbp_top"))

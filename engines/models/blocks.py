"""Small building blocks shared by the recognition models (Inception block, CBAM attention, the
block grid of the histogram descriptors).

Kept apart from any one model so later architectures (Dual-ATME today; other
two-stream or attention models later) reuse the same, tested layers instead of copies.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CBAM", "ChannelAttention", "ConvBNReLU", "InceptionBlock", "SpatialAttention", "block_assignment",
           "random_mirror", "random_shift"]


def random_mirror(x: torch.Tensor, prob: float, u_plane: int, u_mirror_sum: float) -> torch.Tensor:
    """Mirror each motion image left-right with probability ``prob`` (training augmentation).

    A mirrored face moves the other way horizontally, so the u plane is negated. On min-max
    normalised flow (the composite's 0..255, or -1..1 after rescaling) the normalised value of
    -u is ``u_mirror_sum - u`` (255 - u, or -u); v and the strain magnitude only move.
    """
    if prob <= 0:
        return x
    flip = torch.rand(x.shape[0], device=x.device) < prob
    mirrored = x.flip(-1)
    mirrored[:, u_plane] = u_mirror_sum - mirrored[:, u_plane]
    return torch.where(flip[:, None, None, None], mirrored, x)


def random_shift(x: torch.Tensor, max_px: int) -> torch.Tensor:
    """Translate each motion image by a random whole number of pixels, up to ``max_px`` in x and
    in y (uniform, 0 included), the edge pixels repeated into the uncovered border (training
    augmentation: a face's motion pattern means the same a pixel or two off its usual place)."""
    if max_px <= 0:
        return x
    n, _, height, width = x.shape
    padded = nn.functional.pad(x, (max_px, max_px, max_px, max_px), mode="replicate")
    offsets = torch.randint(0, 2 * max_px + 1, (2, n), device=x.device)
    rows = offsets[0][:, None] + torch.arange(height, device=x.device)[None, :]  # (N, H)
    cols = offsets[1][:, None] + torch.arange(width, device=x.device)[None, :]  # (N, W)
    shifted = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return shifted.permute(0, 3, 1, 2)  # advanced indexing put the channels last


def block_assignment(size: int, blocks: int) -> torch.Tensor:
    """(size, blocks) 0/1 matrix: pixel ``i`` belongs to block ``floor(i * blocks / size)``.

    Blocks differ by at most one pixel when ``blocks`` does not divide ``size`` (28 px in 5
    blocks: 6, 6, 5, 6, 5).
    """
    if not 1 <= blocks <= size:
        raise ValueError(f"blocks must be 1..{size} for a {size} px side, got {blocks}")
    index = torch.arange(size) * blocks // size
    return (index[:, None] == torch.arange(blocks)[None, :]).float()


class ConvBNReLU(nn.Sequential):
    """Convolution -> BatchNorm -> ReLU with 'same' padding (odd kernels keep the spatial size)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class InceptionBlock(nn.Module):
    """GoogLeNet-style block with four parallel paths, concatenated to ``4 * out_channels``.

    Paths: 1x1; 1x1 reduction -> 3x3; 1x1 reduction -> 5x5; 3x3 max-pool (stride 1) -> 1x1.
    The spatial size is kept; the caller pools.
    """

    def __init__(self, in_channels: int, out_channels: int, reduce_channels: int) -> None:
        super().__init__()
        self.out_channels = 4 * out_channels
        self.branch1x1 = ConvBNReLU(in_channels, out_channels, 1)
        self.branch3x3 = nn.Sequential(
            ConvBNReLU(in_channels, reduce_channels, 1), ConvBNReLU(reduce_channels, out_channels, 3)
        )
        self.branch5x5 = nn.Sequential(
            ConvBNReLU(in_channels, reduce_channels, 1), ConvBNReLU(reduce_channels, out_channels, 5)
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1), ConvBNReLU(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = (self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x))
        return torch.cat(paths, dim=1)


class ChannelAttention(nn.Module):
    """CBAM's channel map: sigmoid(MLP(avg-pool) + MLP(max-pool)), one shared MLP (Woo et al. 2018)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, 1, 1) weights in 0..1."""
        avg = self.mlp(torch.mean(x, dim=(2, 3), keepdim=True))
        peak = self.mlp(torch.amax(x, dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM's spatial map: sigmoid(conv([max over channels; mean over channels]))."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1, H, W) weights in 0..1."""
        pooled = torch.cat((torch.amax(x, dim=1, keepdim=True), torch.mean(x, dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention."""

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)

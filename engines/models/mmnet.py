"""MMNet: muscle motion (apex - onset) through continuous-attention blocks, calibrated by the onset's layout.

Li, Sui, Zhu, Zhao, "MMNet: Muscle Motion-Guided Network for Micro-Expression Recognition",
IJCAI 2022 (code: github.com/muse1998/MMNet).

The model takes two RGB face crops in 0..1, onset then apex (``ClipSpec(frames=2,
anchors="onset_apex")``). Inside the forward:

* main branch: the difference apex - onset (ImageNet-std scaled) -> stem (3x3 conv stride 2,
  3x3 conv) -> four continuous-attention (CA) blocks (:class:`CABlock`) -> F_M, 512 x 14 x 14
  at 224 px; each block's spatial attention is multiplied by the max-pooled attention of the
  block before it, so attention is "continuous" through depth;
* position calibration (PC) module: the onset frame averaged down to the same 14 x 14 grid,
  one 3-value token per cell, a linear projection to 512, a learned position embedding and a
  2-layer, 4-head transformer encoder -> E_pos, 512 x 14 x 14 (:class:`PositionCalibration`);
* F_M + E_pos is flattened and classified by one linear layer (cross-entropy).

In training mode the forward first applies one colour jitter and one flip + rotation + shift
per clip, the same for both frames, so the difference stays motion. See
``docs/models/mmnet.md`` for every choice the paper leaves open.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from engines.clip_spec import ClipSpec
from engines.models.augment import random_clip_affine, random_colour_jitter
from engines.models.registry import ModelCfg, class_builder, register_model

# How the trainer may draw the training onset and apex near the labelled ones; the rules are
# training/anchor_jitter.py's (engines do not import training; a test keeps the two lists equal).
ANCHOR_JITTER_RULES = ("none", "code", "paper")

__all__ = [
    "CASME2_5_LABELS",
    "MMNET_CFG",
    "CABlock",
    "ContinuousAttention",
    "MMNet",
    "PositionCalibration",
    "TransformerBlock",
    "mmnet",
]

# The CASME II 5-class task of the paper's headline result (training.classmaps "casme2-5" order).
CASME2_5_LABELS = ("happiness", "surprise", "disgust", "repression", "others")
ONSET, APEX = 0, 1
GRID_STRIDE = 16  # stem stride 2, then three stride-2 CA blocks: 224 px -> 14 x 14
# The public code normalises each frame with ImageNet's mean/std: on the difference the mean
# cancels (a division by the std remains); the onset fed to the PC module keeps both.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Rec. 601 luma weights (torchvision's rgb_to_grayscale), for contrast and saturation jitter.
AttentionMode = Literal["continuous", "independent", "none"]

MMNET_CFG = ModelCfg(
    name="mmnet",
    input_size=(2, 3, 224, 224),
    channel_order="RGB",
    channels=("r", "g", "b"),
    value_range=(0.0, 1.0),
    mean=None,
    std=None,
    motion=(
        "2 aligned RGB face crops in 0..1, onset then apex; the model itself forms the pixel difference "
        "apex - onset divided by the ImageNet std (main branch) and the onset normalised by the ImageNet "
        "mean/std and averaged down to the feature grid (position calibration); no optical flow"
    ),
    label_names=CASME2_5_LABELS,
    source_url="https://github.com/muse1998/MMNet",
    paper="H. Li, M. Sui, Z. Zhu, F. Zhao, MMNet: Muscle Motion-Guided Network for Micro-Expression "
    "Recognition, IJCAI 2022",
    license_note="reimplementation from the paper; the public code has no licence file; research use, cite the paper",
    train_datasets=("casme2",),
    protocol="CASME II, 5 classes (happiness, surprise, disgust, repression, others), leave-one-subject-out",
    clip=ClipSpec(frames=2, anchors="onset_apex", size=224, color="rgb"),
)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Convolution (no bias, 'same' padding) -> BatchNorm, the public code's unit."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ContinuousAttention(nn.Module):
    """The paper's CA module (Eq. 1): one spatial attention map, chained through the blocks.

    Attn_i = sigmoid(BN(conv1x1([max over channels; mean over channels]))) * P_M(Attn_{i-1}),
    where P_M is a 3x3 max-pool with the block's stride (the public code's), so the previous
    map lands on this block's grid. With ``continuous=False`` (the paper's Table 4 ablation,
    "independent attention") the previous map is ignored.
    """

    def __init__(self, stride: int, continuous: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.prior_pool = nn.MaxPool2d(3, stride, padding=1) if stride > 1 else nn.Identity()
        self.continuous = continuous

    def forward(self, features: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """(N, C, H, W) features, previous (N, 1, H*s, W*s) or None -> attention (N, 1, H, W) in 0..1."""
        pooled = torch.cat((features.amax(dim=1, keepdim=True), features.mean(dim=1, keepdim=True)), dim=1)
        attention = torch.sigmoid(self.bn(self.conv(pooled)))
        if self.continuous and previous is not None:
            attention = attention * self.prior_pool(previous)
        return attention


class CABlock(nn.Module):
    """One CA block (Eqs. 2-3): F_conv = 1x1(3x3(F)) + 1x1 shortcut(F), then F_conv * Attn.

    As the public code: the stride sits in the 3x3 conv and the shortcut; each conv is followed
    by BatchNorm, with a ReLU after the 3x3 conv and after the sum. The 1x1 shortcut is used in
    every block (the paper's Eq. 2; the code uses identity where the shapes already match).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, attention: AttentionMode) -> None:
        super().__init__()
        self.conv3x3 = _conv_bn(in_channels, out_channels, 3, stride)
        self.conv1x1 = _conv_bn(out_channels, out_channels, 1)
        self.shortcut = _conv_bn(in_channels, out_channels, 1, stride)
        self.attention = (
            ContinuousAttention(stride, continuous=attention == "continuous") if attention != "none" else None
        )

    def forward(
        self, x: torch.Tensor, previous: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features, previous attention or None) -> (attended features, this block's attention or None)."""
        features = F.relu(self.conv1x1(F.relu(self.conv3x3(x))) + self.shortcut(x))
        if self.attention is None:
            return features, None
        attention = self.attention(features, previous)
        return features * attention, attention


class TransformerBlock(nn.Module):
    """Pre-norm ViT encoder block (as timm's ``Block``): x + MHSA(LN(x)), then x + MLP(LN(x)).

    Written out rather than ``nn.TransformerEncoderLayer``: that layer's eval-mode fast path is one
    fused kernel that torch's FLOP counter does not see, and plain matmuls export to ONNX as is.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{dim} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        length, dim = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (N, heads, L, head_dim)
        weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(-1, length, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PositionCalibration(nn.Module):
    """The PC module: the onset's coarse layout (eyes, nose, mouth) as a position embedding E_pos.

    The (normalised) onset is averaged over ``stride`` x ``stride`` cells to the ``grid`` x ``grid``
    feature grid (224 -> 14 x 14); each cell is a 1x1x3 patch, projected linearly to ``dim``, plus
    a learned position embedding, through ``num_layers`` transformer blocks and a final LayerNorm,
    and reshaped back to (dim, grid, grid).
    """

    def __init__(self, dim: int, grid: int, stride: int, num_layers: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.grid, self.stride = grid, stride
        self.embed = nn.Linear(3, dim)  # the code's 1x1 conv patch embedding, same default init
        self.position = nn.Parameter(torch.zeros(1, grid * grid, dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(num_layers)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.position, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):  # timm's ViT initialisation, as the public code
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, onset: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised onset -> E_pos (N, dim, S/stride, S/stride)."""
        cells = F.avg_pool2d(onset, self.stride)  # (N, 3, grid, grid)
        tokens = self.embed(cells.flatten(2).transpose(1, 2)) + self.position
        tokens = self.norm(self.blocks(tokens))
        return tokens.transpose(1, 2).reshape(-1, tokens.shape[2], self.grid, self.grid)


class MMNet(nn.Module):
    """MMNet (Li et al., IJCAI 2022): onset and apex RGB crops in 0..1 -> class logits; main branch
    (apex - onset through four CA blocks) + PC module, one linear head (see module doc).

    ``base_width`` sets the CA blocks' channels (w, w, 2w, 4w: 128, 128, 256, 512) and with them
    the PC module's width; ``num_layers``/``num_heads`` are the PC encoder's N_L/N_H (2/4);
    ``attention`` is ``continuous`` (MMNet), ``independent`` (Table 4) or ``none``, and
    ``position_calibration=False`` drops the PC module (Table 3's ablations); ``flip_prob``,
    ``max_rotation`` (degrees), ``crop_shift`` (fraction of the side) and ``colour_jitter`` set
    the training augmentation (all 0: none); ``anchor_jitter`` (``code``, ``paper`` or ``none``) how
    the trainer draws the training onset and apex near the labelled ones
    (``training.anchor_jitter``).
    """

    def __init__(
        self,
        label_names: tuple[str, ...] = CASME2_5_LABELS,
        image_size: int = 224,
        stem_width: int = 180,
        base_width: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        attention: AttentionMode = "continuous",
        position_calibration: bool = True,
        flip_prob: float = 0.5,
        max_rotation: float = 3.0,
        crop_shift: float = 15 / 224,
        colour_jitter: float = 0.2,
        anchor_jitter: str = "code",
    ) -> None:
        super().__init__()
        label_names = tuple(label_names)
        if image_size < GRID_STRIDE or image_size % GRID_STRIDE:
            raise ValueError(f"image_size {image_size} must be a positive multiple of {GRID_STRIDE} "
                             "(stem stride 2, three stride-2 CA blocks)")
        if attention not in ("continuous", "independent", "none"):
            raise ValueError(f"attention must be 'continuous', 'independent' or 'none', got {attention!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if anchor_jitter not in ANCHOR_JITTER_RULES:
            raise ValueError(f"anchor_jitter must be one of {', '.join(ANCHOR_JITTER_RULES)}, got {anchor_jitter!r}")
        clip = dataclasses.replace(MMNET_CFG.clip, size=image_size)
        self.cfg = dataclasses.replace(MMNET_CFG, input_size=clip.sample_shape, clip=clip, label_names=label_names)
        if label_names != CASME2_5_LABELS:
            self.cfg = dataclasses.replace(self.cfg, train_datasets=(), protocol="")
        self.num_classes = len(label_names)
        self.flip_prob, self.max_rotation, self.crop_shift = flip_prob, max_rotation, crop_shift
        self.colour_jitter = colour_jitter
        # Read by the trainer, which draws the training frames near the labelled onset and apex
        # (training/anchor_jitter.py): the model itself only ever sees two frames.
        self.anchor_jitter = anchor_jitter
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(3, 1, 1), persistent=False)

        widths = (base_width, base_width, 2 * base_width, 4 * base_width)
        strides = (1, 2, 2, 2)
        self.stem = nn.Sequential(
            _conv_bn(3, stem_width, 3, stride=2), nn.ReLU(inplace=True),
            _conv_bn(stem_width, widths[0], 3), nn.ReLU(inplace=True),
        )
        channels = (widths[0], *widths)
        self.blocks = nn.ModuleList(
            CABlock(channels[i], channels[i + 1], strides[i], attention) for i in range(len(widths))
        )
        grid = image_size // GRID_STRIDE
        self.position = (
            PositionCalibration(widths[-1], grid, GRID_STRIDE, num_layers, num_heads, mlp_ratio)
            if position_calibration else None
        )
        self.num_features = widths[-1] * grid * grid
        self.head = nn.Linear(self.num_features, self.num_classes)  # PyTorch's default init, as the code
        for module in (*self.stem.modules(), *self.blocks.modules()):  # the code's ResNet initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def prepare(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2, 3, S, S) onset, apex in 0..1 -> (apex - onset) / std and the normalised onset.

        In training mode the clip is first colour-jittered and moved (flip, rotation, shift), one
        draw per clip applied to both frames.
        """
        if not torch.jit.is_tracing() and tuple(clip.shape[1:]) != self.cfg.input_size:
            raise ValueError(f"mmnet takes (N, {', '.join(map(str, self.cfg.input_size))}) clips (onset, apex), "
                             f"got {tuple(clip.shape)}")
        if self.training:
            clip = random_colour_jitter(clip, self.colour_jitter)
            clip = random_clip_affine(clip, self.flip_prob, self.max_rotation, self.crop_shift)
        onset, apex = clip[:, ONSET], clip[:, APEX]
        return (apex - onset) / self.std, (onset - self.mean) / self.std

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, 2, 3, S, S) -> (F_M, E_pos): motion features and position embedding, (N, 4w, S/16, S/16)
        each (E_pos None without the PC module)."""
        motion, onset = self.prepare(x)
        features, attention = self.stem(motion), None
        for block in self.blocks:
            features, attention = block(features, attention)
        return features, None if self.position is None else self.position(onset)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2, 3, S, S) -> F_M + E_pos, (N, 4w, S/16, S/16)."""
        motion_features, position = self.branches(x)
        return motion_features if position is None else motion_features + position

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, 4w, h, w) -> logits, or the flattened (N, 4w*h*w) vector if ``pre_logits``."""
        flat = features.flatten(1)
        return flat if pre_logits else self.head(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


mmnet = register_model(class_builder(MMNet, "mmnet"))

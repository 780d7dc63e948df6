"""EDMDBN: entire motion (apex - onset) and detail motion (consecutive frame differences), two Swins.

Ma, Wang, Wang, Wang, Li, Xu, Li, Wei, "Entire-detail motion dual-branch network for
micro-expression recognition", Pattern Recognition Letters, 2025 (doi:10.1016/j.patrec.2025.01.021;
code: github.com/likemby/EDMDBN).

The model takes the clip itself: 9 RGB face crops, onset -> apex (index 4) -> offset
(``ClipSpec(frames=9, anchors="onset_apex_offset")``). Inside the forward:

* entire motion ``x[:, 4] - x[:, 0]`` goes through a 2-D Swin (4x4 patches);
* detail motion, the 8 differences ``x[:, 1:] - x[:, :-1]``, through a Video Swin (8x4x4 patches,
  so one token step at the paper's settings);
* each backbone has 3 stages (C = 128 -> 256 -> 512, two patch merges) and a Token Attention
  after each stage's blocks (:class:`TokenAttention`);
* the detail tokens are averaged over time, added to the entire tokens, flattened (512 x 14 x 14
  at 224 px) and classified by one linear layer.

In training mode the forward first applies one random flip + rotation + shift per clip, the same
for all 9 frames (:func:`engines.models.augment.random_clip_affine`). See ``docs/models/edmdbn.md`` for every choice the
paper leaves open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from engines.clip_spec import ClipSpec
from engines.models.augment import random_clip_affine
from engines.models.registry import ModelCfg, class_builder, register_model
from engines.models.ststnet import MEGC2019_LABELS
from engines.models.swin import Grid, PatchEmbed, PatchMerging, SwinStage, init_swin_weights

__all__ = ["EDMDBN", "EDMDBN_CFG", "MotionBranch", "TokenAttention", "edmdbn"]

FRAMES = 9  # T + 1 with T = 8 differences
ONSET, APEX = 0, FRAMES // 2  # the clip spec puts the apex in the middle
PATCH = 4  # spatial patch side of both branches
# The public code normalises every frame with ImageNet's mean/std before differencing; on a
# difference the mean cancels, leaving a division by the per-channel std.
IMAGENET_STD = (0.229, 0.224, 0.225)

EDMDBN_CFG = ModelCfg(
    name="edmdbn",
    input_size=(FRAMES, 3, 224, 224),
    channel_order="RGB",
    channels=("r", "g", "b"),
    value_range=(0.0, 1.0),
    mean=None,
    std=None,
    motion=(
        "9 aligned RGB face crops in 0..1, onset, 3 linearly interpolated, apex, 3 interpolated, offset; "
        "the model itself forms the entire motion (apex - onset) and the 8 consecutive frame differences, "
        "divided by the ImageNet std (the public code's per-frame normalisation); no optical flow"
    ),
    label_names=MEGC2019_LABELS,
    source_url="https://github.com/likemby/EDMDBN",
    paper="B. Ma, L. Wang, Q. Wang, H. Wang, R. Li, L. Xu, Y. Li, H. Wei, Entire-detail motion dual-branch "
    "network for micro-expression recognition, Pattern Recognition Letters, 2025, doi:10.1016/j.patrec.2025.01.021",
    license_note="reimplementation from the paper; the public code has no licence file; research use, cite the paper",
    train_datasets=("casme2", "smic-hs", "samm"),
    protocol="three-class composite of SMIC-HS, CASME II and SAMM, leave-one-subject-out",
    clip=ClipSpec(frames=FRAMES, anchors="onset_apex_offset", size=224, color="rgb", interpolation="linear"),
)


class TokenAttention(nn.Module):
    """The paper's accumulated Token Attention (Eqs. 1-2), one weight per token.

    A_cur = sigmoid(FC([max; mean] of each token's channels)); A_final = A_cur * the previous
    stage's A_final max-pooled 2x2 (the Swin stage in between halved the grid); the tokens are
    multiplied by A_final, which is also handed to the next stage.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, tokens: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (N, D, H, W, C), previous (N, D, 2H, 2W) or None -> (weighted tokens, attention (N, D, H, W))."""
        pooled = torch.stack((tokens.amax(dim=-1), tokens.mean(dim=-1)), dim=-1)
        attention = torch.sigmoid(self.fc(pooled)).squeeze(-1)
        if previous is not None:
            n, d, h2, w2 = previous.shape
            attention = attention * previous.reshape(n, d, h2 // 2, 2, w2 // 2, 2).amax(dim=(3, 5))
        return tokens * attention.unsqueeze(-1), attention


class MotionBranch(nn.Module):
    """One backbone (the paper's Fig. 2): patch embedding, then per stage Swin blocks -> Token
    Attention -> patch merging (none after the last stage), and a final LayerNorm."""

    def __init__(
        self,
        patch: tuple[int, ...],
        grid: Grid,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: int,
        window: Grid,
        mlp_ratio: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(3, embed_dim, patch)
        # Stochastic depth grows linearly from 0 to drop_path_rate over all blocks (Swin's rule).
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages, self.attentions, self.merges = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        dim, heads, (d, h, w) = embed_dim, num_heads, grid
        for index, depth in enumerate(depths):
            first = sum(depths[:index])
            self.stages.append(SwinStage(dim, depth, heads, (d, h, w), window, mlp_ratio, rates[first : first + depth]))
            self.attentions.append(TokenAttention())
            if index < len(depths) - 1:
                self.merges.append(PatchMerging(dim))
                dim, heads, h, w = 2 * dim, 2 * heads, h // 2, w // 2
        self.norm = nn.LayerNorm(dim)
        self.out_dim, self.out_grid = dim, (d, h, w)
        # Swin's initialisation for the transformer layers; the patch embedding and the Token
        # Attention's FC keep PyTorch's default (as in the public code, where they are convolutions).
        for module in (*self.stages, *self.merges):
            module.apply(init_swin_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) image or (N, 3, T, H, W) clip -> tokens (N, D, H/16, W/16, 4C) with 3 stages."""
        tokens, attention = self.patch_embed(x), None
        for index, (stage, token_attention) in enumerate(zip(self.stages, self.attentions, strict=True)):
            tokens, attention = token_attention(stage(tokens), attention)
            if index < len(self.merges):
                tokens = self.merges[index](tokens)
        return self.norm(tokens)


class EDMDBN(nn.Module):
    """EDMDBN (Ma et al. 2025): 9 RGB frames in 0..1 -> class logits; entire + detail motion branches,
    fused by addition, one linear classifier (see module doc).

    ``num_heads`` is the first stage's, doubling at each merge (4, 8, 16: 32 channels per head);
    ``window_size`` is the spatial window (7; the temporal one covers all token steps);
    ``flip_prob``, ``max_rotation`` (degrees) and ``crop_shift`` (fraction of the side) set the
    training augmentation (all 0: none).
    """

    def __init__(
        self,
        label_names: tuple[str, ...] = MEGC2019_LABELS,
        image_size: int = 224,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 6),
        num_heads: int = 4,
        window_size: int = 7,
        temporal_patch: int = 8,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.0,
        flip_prob: float = 0.5,
        max_rotation: float = 4.0,
        crop_shift: float = 4 / 224,
    ) -> None:
        super().__init__()
        label_names = tuple(label_names)
        depths = tuple(int(d) for d in depths)
        if not depths or min(depths) < 1:
            raise ValueError(f"depths must be one or more positive block counts, got {depths}")
        merges = len(depths) - 1
        side = image_size // (PATCH * 2**merges)
        if side < 1 or image_size != side * PATCH * 2**merges:
            raise ValueError(f"image_size {image_size} must be a multiple of {PATCH * 2**merges} "
                             f"(patch {PATCH}, {merges} patch merges)")
        steps = FRAMES - 1
        if temporal_patch < 1 or steps % temporal_patch:
            raise ValueError(f"temporal_patch {temporal_patch} must divide the {steps} frame differences")
        clip = dataclasses.replace(EDMDBN_CFG.clip, size=image_size)
        self.cfg = dataclasses.replace(EDMDBN_CFG, input_size=clip.sample_shape, clip=clip, label_names=label_names)
        if label_names != MEGC2019_LABELS:
            self.cfg = dataclasses.replace(self.cfg, train_datasets=(), protocol="")
        self.num_classes = len(label_names)
        self.flip_prob, self.max_rotation, self.crop_shift = flip_prob, max_rotation, crop_shift
        self.register_buffer("motion_scale", 1.0 / torch.tensor(IMAGENET_STD).reshape(3, 1, 1), persistent=False)

        tokens = image_size // PATCH
        window = (steps // temporal_patch, window_size, window_size)  # all token steps in one window
        common = dict(embed_dim=embed_dim, depths=depths, num_heads=num_heads, window=window,
                      mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate)
        self.entire_branch = MotionBranch((PATCH, PATCH), (1, tokens, tokens), **common)
        self.detail_branch = MotionBranch(
            (temporal_patch, PATCH, PATCH), (steps // temporal_patch, tokens, tokens), **common
        )
        self.num_features = self.entire_branch.out_dim * side * side
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, self.num_classes)  # PyTorch's default init, as the public code

    def motions(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 9, 3, S, S) frames -> entire (N, 3, S, S) and detail (N, 8, 3, S, S), std-scaled."""
        if not torch.jit.is_tracing() and tuple(clip.shape[1:]) != self.cfg.input_size:
            raise ValueError(f"edmdbn takes (N, {', '.join(map(str, self.cfg.input_size))}) clips, "
                             f"got {tuple(clip.shape)}")
        if self.training:
            clip = random_clip_affine(clip, self.flip_prob, self.max_rotation, self.crop_shift)
        entire = (clip[:, APEX] - clip[:, ONSET]) * self.motion_scale
        detail = (clip[:, 1:] - clip[:, :-1]) * self.motion_scale
        return entire, detail

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 9, 3, S, S) -> fused token map (N, 4C, S/16, S/16): entire + time-averaged detail."""
        entire, detail = self.motions(x)
        entire_tokens = self.entire_branch(entire).mean(dim=1)  # D = 1: the mean only drops the axis
        detail_tokens = self.detail_branch(detail.transpose(1, 2)).mean(dim=1)  # (N, 3, T, S, S) in
        return (entire_tokens + detail_tokens).permute(0, 3, 1, 2)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, 4C, h, w) -> logits, or the flattened (N, 4C*h*w) vector if ``pre_logits``."""
        flat = self.dropout(features.flatten(1))
        return flat if pre_logits else self.head(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


edmdbn = register_model(class_builder(EDMDBN, "edmdbn"))

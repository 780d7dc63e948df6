"""TLDN: the Transfer-Learning Dense Network with mixed attention (paper 002), an apex-frame classifier.

Gan, Xiao, Zhu, Jain, Štruc, "Transfer-learning enabled micro-expression recognition using dense
connections and mixed attention", Knowledge-Based Systems, 2024 (doi:10.1016/j.knosys.2024.112640).
The paper names no model; "TLDN" (Transfer-Learning Dense Network) is our name for it.

One RGB face crop of the apex frame (of an Eulerian-magnified clip) goes through a 5x5 stem and
four densely connected blocks of 5x5 convolutions, 2, 4, 8 and 16 layers deep (each layer sees the concatenation of the
block input and every earlier layer's output; Eq. 4 order: conv -> ReLU -> BN), separated by 2x2
average pooling. The output of each block, i.e. every skip pathway of the block side by side, is
re-weighted by the mixed attention module (CBAM order: channel attention with a LeakyReLU MLP,
then spatial attention with a 5x5 convolution) before it is pooled. At 112x112 the last block
runs at 7x7; its attended features are flattened into one fully connected layer.

Ablations of the paper are options: ``attention`` none / channel / spatial / mixed (Tables
10-11) and ``block`` dense / residual (Table 12). The widths (stem 16, growth rate 16, depths
doubling from 2) are our choice: the paper gives only the total, 3.115 M parameters; see docs/models/tldn.md
for the search and for every other choice the paper leaves open.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engines.clip_spec import ClipSpec
from engines.errors import ConfigError
from engines.models.blocks import ChannelAttention, SpatialAttention
from engines.models.registry import ModelCfg, class_builder, register_model

__all__ = [
    "ATTENTION_KINDS",
    "BLOCK_KINDS",
    "EVM_BAND_HZ",
    "EVM_ALPHA",
    "DenseBlock",
    "MixedAttention",
    "ResidualBlock",
    "TLDN",
    "TLDN_LABELS",
    "block_depths",
    "conv_layer",
    "evm_settings",
    "residual_width",
    "tldn",
]

# The paper's 3 macro/micro classes (Table 2), in the MEGC2019 composite's label order.
TLDN_LABELS = ("negative", "positive", "surprise")
ATTENTION_KINDS = ("none", "channel", "spatial", "mixed")
BLOCK_KINDS = ("dense", "residual")
NUM_BLOCKS = 4
# Linear Eulerian magnification before the apex is taken (paper Sec. 3.2): band and gain.
EVM_BAND_HZ = (0.1, 0.4)
EVM_ALPHA = 15.0


def evm_settings() -> dict[str, float | int]:
    """Keyword arguments of ``engines.motion.magnify.eulerian_magnify`` for the paper's EVM.

    The band and alpha are the paper's; the pyramid (4 Laplacian levels, alpha tapered below a
    16 px wavelength) is the kernel's default, since the paper states none. See the model card:
    on clips shorter than 2.5 s this band holds no frequency of the clip's FFT, so the
    magnification leaves the clip unchanged.
    """
    return {"low_hz": EVM_BAND_HZ[0], "high_hz": EVM_BAND_HZ[1], "alpha": EVM_ALPHA, "levels": 4, "lambda_cutoff": 16.0}


def conv_layer(in_channels: int, out_channels: int, kernel_size: int = 5) -> nn.Sequential:
    """Conv -> ReLU -> BatchNorm, the order of the paper's Eq. 4 (a Keras Conv2D with a ReLU, then BN).

    The convolution keeps its bias: a ReLU sits between it and the BatchNorm, so BN cannot absorb it.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_channels),
    )


class DenseBlock(nn.Module):
    """``layers`` 5x5 layers of ``growth_rate`` channels; layer i sees the block input and layers 0..i-1."""

    def __init__(self, in_channels: int, growth_rate: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(conv_layer(in_channels + i * growth_rate, growth_rate) for i in range(layers))
        self.out_channels = in_channels + layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


def block_depths(first_block_layers: int) -> tuple[int, ...]:
    """Layers per block: each block twice as deep as the one before (2, 4, 8, 16 by default).

    Every pooling quarters the pixels, so doubling the depth halves each block's share of the
    compute while the parameters go where the maps are small (0.77 GFLOPs instead of 2.6 for
    four equal blocks of the same size; see the model card).
    """
    return tuple(first_block_layers * 2**index for index in range(NUM_BLOCKS))


def residual_width(in_channels: int, growth_rate: int, layers: int) -> int:
    """The width at which ``layers`` 5x5 convolutions hold about as many weights as the dense block's.

    A dense layer i has 25 * (in + i * k) * k weights; a residual layer at width w has 25 * w^2,
    so w = sqrt(k * mean input width), rounded to a multiple of 4. The Table 12 ablation then
    compares connection patterns at (nearly) equal size, not a bigger network with a smaller one.
    """
    mean_input = in_channels + (layers - 1) * growth_rate / 2
    return max(4, 4 * round(math.sqrt(growth_rate * mean_input) / 4))


class ResidualBlock(nn.Module):
    """The residual counterpart of :class:`DenseBlock` (paper Table 12): the same number of 5x5 layers,
    each adding its output to its input at a constant ``width``, after a 1x1 layer that sets that width."""

    def __init__(self, in_channels: int, width: int, layers: int) -> None:
        super().__init__()
        self.entry = conv_layer(in_channels, width, kernel_size=1)
        self.layers = nn.ModuleList(conv_layer(width, width) for _ in range(layers))
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(x)
        for layer in self.layers:
            x = x + layer(x)
        return x


class MixedAttention(nn.Module):
    """The paper's mixed attention (Eqs. 5-8): channel weights, then spatial weights, either optional.

    Channel: sigmoid(MLP(avg-pool) + MLP(max-pool)), one shared MLP C -> C/r -> C with a LeakyReLU.
    Spatial: sigmoid(5x5 conv of the [max; mean] maps across channels). Both reuse the CBAM layers
    of ``engines.models.blocks``; only the MLP's activation is swapped, ReLU -> LeakyReLU, as Eq. 5 says.
    """

    def __init__(
        self, channels: int, kind: str = "mixed", reduction: int = 16, leaky_slope: float = 0.3, kernel_size: int = 5
    ) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction) if kind in ("channel", "mixed") else None
        if self.channel is not None:
            self.channel.mlp[1] = nn.LeakyReLU(leaky_slope, inplace=True)
        self.spatial = SpatialAttention(kernel_size) if kind in ("spatial", "mixed") else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel is not None:
            x = x * self.channel(x)
        if self.spatial is not None:
            x = x * self.spatial(x)
        return x


def _check_option(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"tldn option {name}: expected {expected}, got {value!r}")


class TLDN(nn.Module):
    """TLDN (paper 002), 3 classes at 112x112 by default: stem, four (dense or residual) blocks with
    attention and 2x2 average pooling, one FC layer.

    Input: (N, 3, S, S) RGB in 0..1 with S a multiple of 16; the last block runs at S/16 (7 at 112).
    """

    def __init__(
        self,
        label_names: tuple[str, ...] = TLDN_LABELS,
        image_size: int = 112,
        magnify: bool = True,
        attention: str = "mixed",
        block: str = "dense",
        stem_channels: int = 16,
        growth_rate: int = 16,
        first_block_layers: int = 2,
        attention_reduction: int = 16,
        leaky_slope: float = 0.3,
    ) -> None:
        super().__init__()
        _check_option(image_size >= 16 and image_size % 16 == 0, "image_size", "a multiple of 16", image_size)
        _check_option(attention in ATTENTION_KINDS, "attention", " / ".join(ATTENTION_KINDS), attention)
        _check_option(block in BLOCK_KINDS, "block", " / ".join(BLOCK_KINDS), block)
        for name, value in (("stem_channels", stem_channels), ("growth_rate", growth_rate),
                            ("first_block_layers", first_block_layers), ("attention_reduction", attention_reduction)):
            _check_option(value >= 1, name, "an integer >= 1", value)
        label_names = tuple(label_names)
        self.cfg = _cfg(label_names, image_size, magnify)
        self.num_classes = len(label_names)
        self.attention_kind = attention
        self.block_kind = block

        self.stem = conv_layer(3, stem_channels)
        blocks, attentions = [], []
        channels = dense_channels = stem_channels
        for layers in block_depths(first_block_layers):
            if block == "dense":
                stage = DenseBlock(channels, growth_rate, layers)
            else:  # as wide as needed to hold about the weights of the dense block it replaces
                stage = ResidualBlock(channels, residual_width(dense_channels, growth_rate, layers), layers)
            dense_channels += layers * growth_rate
            channels = stage.out_channels
            blocks.append(stage)
            attentions.append(nn.Identity() if attention == "none"
                              else MixedAttention(channels, attention, attention_reduction, leaky_slope))
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)
        self.pool = nn.AvgPool2d(2)
        self.feature_size = image_size // 16
        self.num_features = channels * self.feature_size**2
        self.fc = nn.Linear(self.num_features, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> attended features of the last block, (N, C, S/16, S/16)."""
        x = self.pool(self.stem(x))
        for index, (stage, attention) in enumerate(zip(self.blocks, self.attentions)):
            x = attention(stage(x))
            if index < NUM_BLOCKS - 1:
                x = self.pool(x)
        return x

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        flat = features.flatten(1)
        return flat if pre_logits else self.fc(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(label_names: tuple[str, ...], image_size: int, magnify: bool) -> ModelCfg:
    clip = ClipSpec(frames=1, anchors="apex", size=image_size, color="rgb", magnify=evm_settings() if magnify else None)
    motion = (
        "none (appearance): the RGB face crop of the apex frame, taken after linear Eulerian magnification of "
        f"the onset..offset clip (band {EVM_BAND_HZ[0]}-{EVM_BAND_HZ[1]} Hz, alpha {EVM_ALPHA:g})"
        if magnify
        else "none (appearance): the RGB face crop of the apex frame, not magnified"
    )
    paper_labels = label_names == TLDN_LABELS
    return ModelCfg(
        name="tldn",
        input_size=clip.sample_shape,
        channel_order="RGB",
        channels=clip.channels,
        value_range=(0.0, 1.0),
        mean=None,
        std=None,
        motion=motion,
        label_names=label_names,
        source_url="https://doi.org/10.1016/j.knosys.2024.112640",
        paper="C. Gan, J. Xiao, Q. Zhu, D. K. Jain, V. Štruc, Transfer-learning enabled micro-expression "
        "recognition using dense connections and mixed attention, Knowledge-Based Systems, 2024",
        license_note="reimplementation from the paper (no code was published); research use, cite the paper",
        train_datasets=("ckplus", "rafdb", "fer2013", "casme2", "smic-hs", "samm") if paper_labels else (),
        protocol="pretrained on CK+ / RAF-DB / FER-2013 (3 classes), fine-tuned with leave-one-subject-out"
        if paper_labels
        else "leave-one-subject-out",
        clip=clip,
    )


tldn = register_model(class_builder(TLDN, "tldn"))

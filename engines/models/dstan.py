"""DSTAN: an appearance stream and an optical-flow stream, each CNN -> LSTM with attention, fused by an SVM.

Wang, Huang, Liu, Gu, Yang, Wang, Zhang, "Micro Expression Recognition via Dual-Stream
Spatiotemporal Attention Network", Journal of Healthcare Engineering 2021, 7799100
(doi:10.1155/2021/7799100; no public code).

One sample is the whole onset..offset clip, resampled by TIM to 9 aligned RGB face crops, with
the TV-L1 flow from each crop to the next (``ClipSpec(frames=9, interpolation="tim",
flow="tvl1")``: planes r, g, b, u_next, v_next). Two independent streams read it:

* STAN-A (appearance) reads the 9 RGB frames, STMN-A (motion) the 8 flow fields (the 9th
  frame's flow planes are zero and are not read);
* each frame goes through a 5-stage CNN (:class:`SpatialModel`): multiscale-kernel spatial
  attention after stage 3, dual-pool channel attention after stage 5; STAN-A also fuses its
  stage-3 and stage-5 maps (LHFN); temporal attention weights each frame, a single-layer LSTM
  runs over the frames, its outputs are averaged over time and a linear layer gives the logits.

Training: the two streams share no parameter, so one optimiser on the sum of their two
cross-entropies gives each stream exactly the gradient of its own loss (the paper trains them
separately). Afterwards the trainer calls :meth:`DSTAN.after_training`, which fits a linear SVM
on the two streams' concatenated softmax outputs (the paper's "feature concatenate-SVM") and
stores it as a linear layer (:class:`SVMFusion`). See ``docs/models/dstan.md`` for every choice
the paper leaves open.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engines.clip_spec import ClipSpec
from engines.models.blocks import ChannelAttention, ConvBNReLU
from engines.models.linear_svm import ABSENT_CLASS_SCORE, fit_linear_svm
from engines.models.registry import ModelCfg, class_builder, register_model
from engines.models.ststnet import MEGC2019_LABELS
from engines.preprocess import LIVE_FLOW

__all__ = [
    "ABSENT_CLASS_SCORE",
    "DSTAN",
    "DSTAN_CFG",
    "DSTAN_TVL1",
    "FLOW_SCHEDULES",
    "DualPoolChannelAttention",
    "MultiScaleSpatialAttention",
    "SVMFusion",
    "SpatialModel",
    "StreamNetwork",
    "dstan",
]

FRAMES = 9  # TIM length (paper §3.2)
COLOUR_PLANES = slice(0, 3)  # r, g, b in 0..1
FLOW_PLANES = slice(3, 5)  # u_next, v_next in pixels; zero in the last frame
LOW_LEVEL_STAGE = 3  # "the third convolution layers can learn the low-level texture features" (§2.3)
FUSIONS = ("svm", "average")
FEATURE_BATCH = 32  # samples per no-grad forward when collecting the SVM's training features

# TV-L1 (the paper names no flow algorithm) with OpenCV DualTVL1's defaults, written out so the
# spec does not move if a default elsewhere does. On 224 px synthetic pairs they keep the error
# below 0.08 px up to 4 px of motion, where three pyramid scales already miss by 0.3 px
# (measured in docs/models/dstan.md); the flow is computed offline or on a GPU anyway.
DSTAN_TVL1 = {
    "tau": 0.25, "lambda_": 0.15, "theta": 0.3, "nscales": 5, "warps": 5, "epsilon": 0.01,
    "inner_iterations": 30, "outer_iterations": 10, "scale_step": 0.8, "gamma": 0.0, "median_filtering": 5,
}

# The flow schedules a model can be built with (``flow_schedule``): the paper-size default, and
# the project's cheap live schedule (engines.preprocess.LIVE_FLOW, about 10x less CPU) for
# synthetic clips and CPU streaming. The schedule is part of the clip spec, so training and
# serving compute the same flow.
FLOW_SCHEDULES = {"opencv": DSTAN_TVL1, "live": dict(LIVE_FLOW["flow_params"])}

DSTAN_CFG = ModelCfg(
    name="dstan",
    input_size=(FRAMES, 5, 224, 224),
    channel_order="RGB",
    channels=("r", "g", "b", "u_next", "v_next"),
    value_range=(0.0, 1.0),  # the colour planes; the flow planes are signed pixels
    mean=None,
    std=None,
    motion=(
        "the onset..offset clip of aligned face crops resampled by TIM to 9 frames (RGB, 0..1) plus the "
        "TV-L1 flow (u, v in pixels at the input size) from each frame to the next, the last frame's flow "
        "zero; the appearance stream reads the 9 RGB frames, the motion stream the first 8 flow fields; "
        "no normalisation (every stream starts with a BatchNorm after its first convolution)"
    ),
    label_names=MEGC2019_LABELS,
    source_url="https://doi.org/10.1155/2021/7799100",
    paper="Y. Wang, Y. Huang, C. Liu, X. Gu, D. Yang, S. Wang, B. Zhang, Micro Expression Recognition via "
    "Dual-Stream Spatiotemporal Attention Network, Journal of Healthcare Engineering 2021, 7799100",
    license_note="reimplementation from the paper (CC-BY 4.0); no public code or weights; cite the paper",
    train_datasets=("smic-hs",),  # the paper's 3-class experiment; no weights are published
    protocol="leave-one-subject-out within one dataset (the paper: SMIC 3 classes, CASME 4, CASME II 5)",
    clip=ClipSpec(
        frames=FRAMES, anchors="onset_apex_offset", size=224, color="rgb", interpolation="tim",
        flow="tvl1", flow_params=DSTAN_TVL1,
    ),
)


class MultiScaleSpatialAttention(nn.Module):
    """Eq. 2-3: 1x1, 3x3 and 5x5 convolutions to one map each, a 1x1 convolution of the three, sigmoid.

    Returns the (N, 1, H, W) weights; the caller multiplies (Eq. 4), as ``blocks`` attentions do.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scales = nn.ModuleList(nn.Conv2d(channels, 1, k, padding=k // 2) for k in (1, 3, 5))
        self.fuse = nn.Conv2d(len(self.scales), 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([scale(x) for scale in self.scales], dim=1)
        return torch.sigmoid(self.fuse(maps))


class DualPoolChannelAttention(ChannelAttention):
    """Eq. 5-6: CBAM's channel map (shared MLP on the GAP and GMP vectors, summed, sigmoid)
    with the biases b1 and b2 that Eq. 5 writes and ``blocks.ChannelAttention`` leaves out."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__(channels, reduction)
        for conv in (self.mlp[0], self.mlp[2]):
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels))


class SpatialModel(nn.Module):
    """The per-frame CNN: five stages of Conv3x3 (zero pad) -> BN -> ReLU -> MaxPool 2x2/2.

    With ``attention`` the stage-3 output (low level) is refined by the multiscale spatial
    attention and the stage-5 output (high level) by the dual-pool channel attention, in line,
    so stages 4-5 see the refined low-level map. With ``lhfn`` (STAN's Low-High Feature fusion
    Network) the frame feature is [GAP(1x1 conv(low)), GAP(1x1 conv(high))]; without it, GAP(high).
    """

    def __init__(
        self, in_channels: int, widths: Sequence[int], lhfn: bool, attention: bool, lhfn_width: int, reduction: int
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 5 or min(widths) < 1:
            raise ValueError(f"the spatial model has five conv stages: widths must be 5 positive counts, got {widths}")
        stages = []
        for out_channels in widths:
            stages.append(nn.Sequential(ConvBNReLU(in_channels, out_channels, 3), nn.MaxPool2d(2)))
            in_channels = out_channels
        self.low = nn.Sequential(*stages[:LOW_LEVEL_STAGE])
        self.high = nn.Sequential(*stages[LOW_LEVEL_STAGE:])
        low_width, high_width = widths[LOW_LEVEL_STAGE - 1], widths[-1]
        self.spatial_attention = MultiScaleSpatialAttention(low_width) if attention else None
        self.channel_attention = DualPoolChannelAttention(high_width, reduction) if attention else None
        if lhfn:
            self.low_projection = ConvBNReLU(low_width, lhfn_width, 1)
            self.high_projection = ConvBNReLU(high_width, lhfn_width, 1)
            self.out_features = 2 * lhfn_width
        else:
            self.low_projection = self.high_projection = None
            self.out_features = high_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) frames -> (B, out_features) frame features."""
        low = self.low(x)
        if self.spatial_attention is not None:
            low = low * self.spatial_attention(low)
        high = self.high(low)
        if self.channel_attention is not None:
            high = high * self.channel_attention(high)
        if self.low_projection is None:
            return high.mean(dim=(2, 3))
        return torch.cat((self.low_projection(low).mean(dim=(2, 3)), self.high_projection(high).mean(dim=(2, 3))), 1)


class StreamNetwork(nn.Module):
    """STAN-A or STMN-A: the spatial model on every frame, temporal attention, LSTM, time average, FC."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int],
        hidden_size: int,
        lhfn: bool,
        spatial_attention: bool,
        temporal_attention: bool,
        lhfn_width: int,
        reduction: int,
    ) -> None:
        super().__init__()
        self.spatial = SpatialModel(in_channels, widths, lhfn, spatial_attention, lhfn_width, reduction)
        width = self.spatial.out_features
        # Eq. 8 says only "sigmoid gives r_i": one linear score per frame feature, shared by all frames.
        self.frame_score = nn.Linear(width, 1) if temporal_attention else None
        self.lstm = nn.LSTM(width, hidden_size, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, T, C, S, S) -> (N, T, D): S_i of every frame, before temporal attention."""
        steps = frames.shape[1]
        return self.spatial(frames.flatten(0, 1)).reshape(-1, steps, self.spatial.out_features)

    def frame_weights(self, features: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, T, 1) temporal attention r_i in (0, 1) (Eq. 8)."""
        if self.frame_score is None:
            raise RuntimeError("this stream was built without temporal attention")
        return torch.sigmoid(self.frame_score(features))

    def forward_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, T, C, S, S) -> (N, hidden_size): the time-averaged LSTM outputs f (Eq. 1)."""
        features = self.frame_features(frames)
        if self.frame_score is not None:
            features = features * self.frame_weights(features)
        outputs, _ = self.lstm(features)
        return outputs.mean(dim=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(frames))


class SVMFusion(nn.Module):
    """A linear SVM (one-vs-rest) on the two streams' concatenated probabilities, kept as a linear layer.

    The SVM is fitted by scikit-learn (:meth:`fit`) and its coefficients are copied into the
    ``weight``/``bias`` buffers, so checkpoints and the ONNX graph carry it and ``forward``
    returns exactly ``decision_function``. ``fitted`` (a bool buffer) says whether it was fitted.
    Buffers, not parameters: gradient descent never touches them.
    """

    def __init__(self, in_features: int, num_classes: int, c: float) -> None:
        super().__init__()
        self.c = c
        self.register_buffer("weight", torch.zeros(num_classes, in_features))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("fitted", torch.tensor(False))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight, self.bias)

    @torch.no_grad()
    def fit(self, features: np.ndarray, labels: np.ndarray, class_weight: torch.Tensor | None, seed: int):
        """Fit the SVM on (features, labels) and copy it in; returns scikit-learn's estimator.

        The fit is the zoo's shared one (:func:`engines.models.linear_svm.fit_linear_svm`, no
        standardisation: the features are probabilities): ``class_weight`` (per class index, e.g.
        the trainer's balanced weights) becomes the SVM's class weights, and a class absent from
        ``labels`` gets :data:`ABSENT_CLASS_SCORE`.
        """
        fitted = fit_linear_svm(features, labels, self.weight.shape[0], class_weight, seed, self.c)
        self.weight.copy_(torch.from_numpy(fitted.weight))
        self.bias.copy_(torch.from_numpy(fitted.bias))
        self.fitted.fill_(True)
        return fitted.estimator


class DSTAN(nn.Module):
    """The dual-stream network; forward takes (N, 9, 5, S, S) clips (r, g, b, u_next, v_next).

    DSTAN on 9-frame TIM clips with TV-L1 flow; ``lhfn``/``spatial_attention``/``temporal_attention``
    switch off the modules of the paper's Table 2 ablation; ``fusion="average"`` is Table 3's baseline.

    ``forward`` in training mode returns both streams' logits side by side, (N, 2K): appearance
    then motion (:meth:`training_loss` splits them). In eval mode it returns (N, K) fused scores:
    with ``fusion="svm"`` the SVM's decision values once :meth:`after_training` has fitted it;
    with ``fusion="average"``, or while the SVM is not fitted, log of the mean of the two streams'
    softmax probabilities (a softmax of it, as the trainer and the exported engine apply, gives
    that mean exactly). The choice between the two is made in the graph from the ``fitted``
    buffer, so an export always matches the weights it carries.
    """

    def __init__(
        self,
        label_names: tuple[str, ...] = MEGC2019_LABELS,
        image_size: int = 224,
        fusion: str = "svm",
        base_width: int = 16,
        hidden_size: int = 128,
        lhfn_width: int = 128,
        reduction: int = 16,
        lhfn: bool = True,
        spatial_attention: bool = True,
        temporal_attention: bool = True,
        svm_c: float = 1.0,
        flow_schedule: str = "opencv",
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32 (five 2x2 max-pools), got {image_size}")
        if base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")
        if flow_schedule not in FLOW_SCHEDULES:
            raise ValueError(f"flow_schedule must be one of {', '.join(FLOW_SCHEDULES)}, got {flow_schedule!r}")
        label_names = tuple(label_names)
        clip = dataclasses.replace(DSTAN_CFG.clip, size=image_size, flow_params=dict(FLOW_SCHEDULES[flow_schedule]))
        self.cfg = dataclasses.replace(DSTAN_CFG, input_size=clip.sample_shape, clip=clip, label_names=label_names)
        if label_names != MEGC2019_LABELS:
            self.cfg = dataclasses.replace(self.cfg, train_datasets=())
        self.num_classes = len(label_names)
        self.fusion = fusion
        widths = tuple(base_width * 2**stage for stage in range(5))  # doubling per stage, VGG-style
        common = dict(num_classes=self.num_classes, widths=widths, hidden_size=hidden_size,
                      spatial_attention=spatial_attention, temporal_attention=temporal_attention,
                      lhfn_width=lhfn_width, reduction=reduction)
        self.appearance = StreamNetwork(COLOUR_PLANES.stop - COLOUR_PLANES.start, lhfn=lhfn, **common)  # STAN-A
        self.motion = StreamNetwork(FLOW_PLANES.stop - FLOW_PLANES.start, lhfn=False, **common)  # STMN-A
        self.num_features = 2 * hidden_size
        self.svm = SVMFusion(2 * self.num_classes, self.num_classes, svm_c)

    def streams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 9, 5, S, S) -> the appearance frames (N, 9, 3, S, S) and the 8 flows (N, 8, 2, S, S)."""
        if not torch.jit.is_tracing() and tuple(x.shape[1:]) != self.cfg.input_size:
            raise ValueError(f"dstan takes (N, {', '.join(map(str, self.cfg.input_size))}) clips, got {tuple(x.shape)}")
        return x[:, :, COLOUR_PLANES], x[:, :-1, FLOW_PLANES]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 9, 5, S, S) -> (N, 2 * hidden_size): [f of STAN-A, f of STMN-A]."""
        frames, flows = self.streams(x)
        return torch.cat((self.appearance.forward_features(frames), self.motion.forward_features(flows)), dim=1)

    def stream_logits(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features -> (appearance logits, motion logits), (N, K) each."""
        appearance, motion = features.chunk(2, dim=1)
        return self.appearance.head(appearance), self.motion.head(motion)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features -> training: (N, 2K) stream logits; eval: (N, K) fused scores."""
        if pre_logits:
            return features
        appearance, motion = self.stream_logits(features)
        if self.training:
            return torch.cat((appearance, motion), dim=1)
        return self._fuse(appearance, motion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _fuse(self, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        log_p, log_q = F.log_softmax(appearance, dim=1), F.log_softmax(motion, dim=1)
        average = torch.logsumexp(torch.stack((log_p, log_q)), dim=0) - math.log(2.0)  # log((p + q) / 2)
        if self.fusion == "average":
            return average
        if torch.jit.is_tracing() and not self._svm_fitted():
            warnings.warn("exporting a dstan whose SVM fusion is not fitted: the engine averages the two "
                          "streams' probabilities until after_training has fitted it", stacklevel=2)
        decision = self.svm(torch.cat((log_p.exp(), log_q.exp()), dim=1))
        return torch.where(self.svm.fitted, decision, average)

    def _svm_fitted(self) -> bool:
        """The ``fitted`` flag as a Python bool, without the tracer's warning about reading a tensor."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return bool(self.svm.fitted)

    def training_loss(
        self, logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None
    ) -> torch.Tensor:
        """CE(appearance) + CE(motion) on the (N, 2K) training output: each stream gets its own gradient."""
        if logits.shape[1] != 2 * self.num_classes:
            raise ValueError(f"expected the training forward's (N, {2 * self.num_classes}) stream logits, "
                             f"got {tuple(logits.shape)}")
        appearance, motion = logits.chunk(2, dim=1)
        return F.cross_entropy(appearance, target, weight=class_weight) + F.cross_entropy(
            motion, target, weight=class_weight
        )

    @torch.no_grad()
    def stream_probabilities(self, x: torch.Tensor, batch_size: int = FEATURE_BATCH) -> torch.Tensor:
        """(N, 9, 5, S, S) -> (N, 2K) on the CPU: [softmax of STAN-A, softmax of STMN-A], eval mode, batched."""
        was_training, device = self.training, self.svm.weight.device
        self.eval()
        try:
            parts = []
            for start in range(0, len(x), batch_size):
                batch = x[start : start + batch_size].to(device)
                appearance, motion = self.stream_logits(self.forward_features(batch))
                parts.append(torch.cat((appearance.softmax(dim=1), motion.softmax(dim=1)), dim=1).cpu())
            return torch.cat(parts) if parts else torch.empty(0, 2 * self.num_classes)
        finally:
            self.train(was_training)

    def after_training(
        self, inputs: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor | None, seed: int
    ) -> None:
        """Fit the SVM fusion on the training samples' stream probabilities (the trainer calls this).

        Fitted whatever ``fusion`` is, so every checkpoint carries both of Table 3's fusions.
        """
        features = self.stream_probabilities(inputs)
        self.svm.fit(features.numpy(), labels.cpu().numpy(), class_weight, seed)


dstan = register_model(class_builder(DSTAN, "dstan"))

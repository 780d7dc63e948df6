"""Spotter settings (configs/spot/*.toml), validated on load.

Every duration is in seconds, never frames, so one profile serves a 30 fps webcam and a
200 fps lab camera alike: the spotter turns seconds into frames with the stream's rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from engines.config import ConfigModel, load_config

ROI_NAMES = ("left_eyebrow", "right_eyebrow", "mouth", "chin")


class DetectParams(ConfigModel):
    """From a per-frame signal to intervals; shared by every spotter (streamer/spotting/signal.py)."""

    smooth_s: float = Field(0.1, ge=0.0, le=1.0)  # moving-average window of the signal
    baseline_s: float = Field(5.0, gt=0.5, le=60.0)  # quiet history the threshold is learnt from
    warmup_s: float = Field(0.5, ge=0.0)  # nothing is spotted before this much quiet history exists
    threshold_k: float = Field(5.0, gt=0.0)  # threshold = median + k x (1.4826 MAD) of the quiet signal
    min_threshold: float = Field(0.0, ge=0.0)  # ... and never below this (signal units)
    boundary_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # onset/offset where the signal falls to this share of the peak
    valley_fraction: float = Field(0.5, gt=0.0, le=1.0)  # a boundary walk below this share stops where the signal rises again
    release_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # a region also ends where the signal falls to this share of its peak
    merge_gap_s: float = Field(0.1, ge=0.0)  # a dip below threshold shorter than this does not end a region
    look_ahead_s: float = Field(0.3, ge=0.0)  # an interval is final this long after its offset
    min_duration_s: float = Field(0.04, ge=0.0)  # intervals shorter than this are dropped (1/25 s)
    max_duration_s: float = Field(4.0, gt=0.0)  # ... and longer than this
    micro_max_s: float = Field(0.5, gt=0.0)  # micro when offset - onset <= this

    @model_validator(mode="after")
    def _ordered(self) -> DetectParams:
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("min_duration_s must be smaller than max_duration_s")
        return self


class FlowParams(ConfigModel):
    """Optical-flow ROI spotter (MEGC winners' method, anchors.md C(3))."""

    algorithm: Literal["dis", "farneback"] = "dis"
    dis_finest_scale: int = Field(1, ge=0, le=4)  # 0 = full resolution; 1 = half (4x cheaper)
    dis_patch_size: int = Field(8, ge=4, le=32)
    dis_patch_stride: int = Field(5, ge=1, le=16)
    dis_gradient_iterations: int = Field(12, ge=1, le=100)
    reference_lag_s: float = Field(0.3, gt=0.0)  # flow from a quiet frame at least this long ago
    max_reference_age_s: float = Field(4.5, gt=0.0)  # a reference is never older than this
    plateau_s: float = Field(1.0, gt=0.0)  # a signal flat for this long above threshold is a lasting change:
    plateau_tolerance: float = Field(0.1, gt=0.0, lt=1.0)  # ... flat = (max - min) < this x mean; re-reference
    rois: tuple[Literal[ROI_NAMES], ...] = ("left_eyebrow", "right_eyebrow", "mouth")  # type: ignore[valid-type]
    brow_eye_gap: float = Field(0.04, ge=0.0, le=0.5)  # brow boxes end this far (x crop size) above the upper lids
    split_mouth: bool = True  # the mouth as two halves: lip corners moving apart do not cancel
    fit_margin: float = Field(0.06, ge=0.0, le=0.3)  # global-motion samples keep this far (x crop size) from the ROIs
    blink_leak: float = Field(0.5, ge=0.0, le=2.0)  # a brow's motion minus this share of its eye's motion
    reference_guard_s: float = Field(0.1, ge=0.0, le=1.0)  # a reference is followed by this much calm (no blink)
    landmark_smoothing_s: float = Field(0.3, ge=0.0)  # time constant of the landmark average the ROIs come from

    @model_validator(mode="after")
    def _reference(self) -> FlowParams:
        if self.max_reference_age_s <= self.reference_lag_s:
            raise ValueError("max_reference_age_s must be larger than reference_lag_s")
        if not self.rois:
            raise ValueError("rois must name at least one region")
        return self


class LbpParams(ConfigModel):
    """LBP-chi-squared feature difference (Moilanen et al. 2014, anchors.md C(1))."""

    grid: int = Field(6, ge=2, le=16)  # grid x grid blocks over the aligned crop
    half_window_s: float = Field(0.1, gt=0.0)  # k: tail/head frames are k seconds before/after the current one
    top_fraction: float = Field(1 / 3, gt=0.0, le=1.0)  # share of the largest block distances summed
    exclude_eyes: bool = True  # drop blocks whose centre lies in an eye box (blinks)


class SpotParams(ConfigModel):
    """One spotting profile: which spotter, and the settings of each."""

    method: Literal["flow", "lbp"] = "flow"
    detect: DetectParams = DetectParams()
    flow: FlowParams = FlowParams()
    lbp: LbpParams = LbpParams()


DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "configs" / "spot" / "default.toml"


def load_spot_params(path: str | Path | None = None) -> SpotParams:
    """Read a spotting profile; None reads configs/spot/default.toml."""
    return load_config(path if path is not None else DEFAULT_PROFILE, SpotParams)

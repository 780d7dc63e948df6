"""Every tunable number of the generator, validated, with defaults that match real footage.

A TOML file (``configs/synth/*.toml``, loaded with :func:`engines.config.load_config`)
may override any of them; the command line only switches distractors on or off.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from engines.config import ConfigModel
from training.synthetic.events import MACRO_LIMITS_S, MICRO_LIMITS_S


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"a [low, high] range with low <= high, got {list(value)}")
    return value


Range = Annotated[tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]], AfterValidator(_ordered)]


class TimingSettings(ConfigModel):
    """Durations (seconds), apex position (fraction of the duration) and peak displacement (px)."""

    micro_duration_s: Range = (0.1, 0.5)
    macro_duration_s: Range = (0.8, 3.0)
    apex_fraction: Range = (0.3, 0.6)
    micro_amplitude_px: Range = (1.0, 4.0)
    macro_amplitude_px: Range = (5.0, 10.0)

    @model_validator(mode="after")
    def _within_limits(self) -> "TimingSettings":
        for name, limits in (("micro_duration_s", MICRO_LIMITS_S), ("macro_duration_s", MACRO_LIMITS_S)):
            low, high = getattr(self, name)
            if low < limits[0] - 1e-9 or high > limits[1] + 1e-9:
                raise ValueError(f"{name} must lie within [{limits[0]:g}, {limits[1]:g}] s, got [{low:g}, {high:g}]")
        if not (0 < self.apex_fraction[0] and self.apex_fraction[1] < 1):
            raise ValueError("apex_fraction must lie strictly between 0 and 1")
        return self


class DistractorSettings(ConfigModel):
    """Nuisance motion a spotter must ignore; each part can be switched off."""

    blinks: bool = True
    blink_rate_hz: float = Field(0.25, ge=0)
    blink_duration_s: Range = (0.1, 0.3)
    blink_closure: Range = (0.7, 1.0)  # fraction of the eye opening the upper lid travels

    head_motion: bool = True
    head_move_rate_hz: float = Field(0.1, ge=0)
    head_move_duration_s: Range = (0.4, 1.5)
    head_translation_px: float = Field(8.0, ge=0)  # largest offset from the start pose
    head_rotation_deg: float = Field(3.0, ge=0, le=30)

    illumination: bool = True
    illumination_gain: float = Field(0.08, ge=0, lt=1)  # largest relative change of brightness
    illumination_offset: float = Field(6.0, ge=0, le=64)  # largest added grey level
    illumination_period_s: Range = (6.0, 20.0)

    noise: bool = True
    noise_sigma: float = Field(1.5, ge=0, le=32)  # grey levels

    def only(self, enabled: set[str]) -> "DistractorSettings":
        """A copy with exactly the named parts switched on (``blinks``, ``head_motion``, ``illumination``, ``noise``)."""
        return self.model_copy(update={name: name in enabled for name in DISTRACTOR_NAMES})


DISTRACTOR_NAMES = ("blinks", "head_motion", "illumination", "noise")


class SynthSettings(ConfigModel):
    face_scale: float = Field(0.6, gt=0.05, le=1.2)  # face width over the frame's shorter side
    vary_identities: bool = True
    timing: TimingSettings = TimingSettings()
    distractors: DistractorSettings = DistractorSettings()

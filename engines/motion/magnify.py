"""Linear Eulerian video magnification (Wu et al., SIGGRAPH 2012), batched in torch, any device.

Small motions inside a temporal frequency band are amplified by filtering each pixel's
intensity over time and adding the filtered signal back, ``alpha`` times, per spatial band:

1. **Spatial decomposition**: a Laplacian pyramid of every frame (OpenCV's ``pyrDown`` /
   ``pyrUp`` 5-tap binomial kernel, reflected border), ``levels`` band-pass levels plus the
   low-pass residual.
2. **Temporal filter**: an ideal band-pass over the clip, ``low_hz`` to ``high_hz`` (an FFT
   along time, zero outside the band: the clips are short and whole, not a live stream).
3. **Amplification**: each band-pass level gets ``alpha`` times its filtered signal, except
   where the paper's bound for linear magnification, ``(1 + alpha) * delta < lambda / 8``,
   would be broken: levels whose spatial wavelength ``lambda`` (about 2**(level + 2) px for a
   level of a binomial pyramid) is below ``lambda_cutoff`` get ``alpha`` scaled down linearly,
   as the paper's Fig. 6; the low-pass residual is not amplified (it carries lighting changes).
4. **Collapse** the pyramid back to frames (float, not clipped: callers decide).

Choices the paper leaves to the implementation, fixed here: a Laplacian (not Gaussian)
pyramid, the ideal FFT band-pass, the wavelength of a level, and no chrominance handling
(the frames are grey). They are documented in docs/motion.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engines.errors import InputError

__all__ = ["eulerian_magnify", "laplacian_pyramid", "collapse_pyramid", "temporal_bandpass"]

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial blur of ``(N, 1, H, W)`` with a reflected border (OpenCV's BORDER_REFLECT_101)."""
    kernel = _BINOMIAL.to(x.device, x.dtype)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, 5))
    return F.conv2d(x, kernel.view(1, 1, 5, 1))


def _down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[..., ::2, ::2]


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-insertion upsampling to ``size`` followed by the blur (x4 to keep the mean)."""
    up = x.new_zeros(x.shape[0], x.shape[1], size[0], size[1])
    up[..., ::2, ::2] = x[..., : (size[0] + 1) // 2, : (size[1] + 1) // 2]
    return 4.0 * _blur(up)


def laplacian_pyramid(frames: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` band-pass images then the low-pass residual, each ``(N, 1, h, w)``."""
    bands = []
    current = frames
    for _ in range(levels):
        smaller = _down(current)
        bands.append(current - _up(smaller, current.shape[-2:]))
        current = smaller
    bands.append(current)
    return bands


def collapse_pyramid(bands: list[torch.Tensor]) -> torch.Tensor:
    """The inverse of :func:`laplacian_pyramid`."""
    current = bands[-1]
    for band in reversed(bands[:-1]):
        current = band + _up(current, band.shape[-2:])
    return current


def temporal_bandpass(signal: torch.Tensor, fps: float, low_hz: float, high_hz: float) -> torch.Tensor:
    """Ideal band-pass along dim 1 (time) of ``(B, T, ...)``: frequencies outside [low, high] removed."""
    frames = signal.shape[1]
    spectrum = torch.fft.rfft(signal, dim=1)
    freqs = torch.fft.rfftfreq(frames, d=1.0 / fps).to(signal.device)
    keep = ((freqs >= low_hz) & (freqs <= high_hz)).to(spectrum.dtype)
    shape = [1, -1] + [1] * (signal.dim() - 2)
    return torch.fft.irfft(spectrum * keep.view(shape), n=frames, dim=1)


def eulerian_magnify(
    frames,
    fps: float,
    low_hz: float,
    high_hz: float,
    alpha: float,
    *,
    levels: int = 4,
    lambda_cutoff: float = 16.0,
) -> torch.Tensor:
    """Magnified clips: ``frames`` ``(B, T, H, W)`` (uint8 0..255 or float) -> float32, same scale.

    ``fps`` is the clips' frame rate; the band ``low_hz..high_hz`` must lie within (0, fps/2].
    """
    frames = torch.as_tensor(frames)
    if frames.dim() != 4:
        raise InputError(f"expected clips of shape (B, T, H, W), got {tuple(frames.shape)}", column="frames")
    batch, length, height, width = frames.shape
    if length < 2:
        raise InputError(f"a clip needs at least 2 frames, got {length}", column="frames")
    if not 0 <= low_hz < high_hz <= fps / 2:
        raise InputError(f"band {low_hz}..{high_hz} Hz must lie within 0..{fps / 2} Hz (fps {fps})", column="band")
    if alpha < 0 or levels < 1 or min(height, width) < 2 ** (levels + 1):
        raise InputError(f"need alpha >= 0, levels >= 1 and frames of at least {2 ** (levels + 1)} px "
                         f"for {levels} levels, got alpha {alpha}, {height}x{width}", column="levels")
    x = frames.to(torch.float32).reshape(batch * length, 1, height, width)
    bands = laplacian_pyramid(x, levels)
    magnified = []
    for level, band in enumerate(bands):
        if level == len(bands) - 1:  # the low-pass residual: lighting, not motion
            magnified.append(band)
            continue
        wavelength = 2.0 ** (level + 2)
        gain = alpha * min(1.0, wavelength / lambda_cutoff)
        if gain == 0:
            magnified.append(band)
            continue
        shaped = band.reshape(batch, length, *band.shape[-2:])
        filtered = temporal_bandpass(shaped, fps, low_hz, high_hz)
        magnified.append((shaped + gain * filtered).reshape(band.shape))
    return collapse_pyramid(magnified).reshape(batch, length, height, width)


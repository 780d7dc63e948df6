"""From a per-frame spotting signal to expression intervals, in a stream.

Both spotters reduce each frame to one number (how much the face has moved or changed);
:class:`SignalDetector` does the rest the same way for both:

1. **Smooth** with a moving average of ``smooth_s``.
2. **Threshold against the stream's own quiet level**: median + k x robust std (1.4826 MAD)
   of the smoothed signal over the last ``baseline_s`` of *quiet* frames, so the noise
   level of a camera, a face or the lighting sets the bar, not a constant.
3. **Regions**: runs above the threshold; a dip shorter than ``merge_gap_s`` does not end one.
   A region also ends once the signal has fallen to ``release_fraction`` of its peak's rise
   (for ``merge_gap_s``) even if it stays above the threshold: *released* (the flow spotter
   then re-references); no new region opens until the signal is under the threshold again.
4. **Boundaries**: from the region's peak, walk outward until the signal falls to
   ``boundary_fraction`` of the peak's rise above the quiet level, or, once below
   ``valley_fraction`` of it, starts rising again (a valley: the next event begins there).
   This is the "expend" step of the MEGC winners' method (anchors.md C(3) step 8).
5. **Duration filter** and **micro/macro** by duration.

An interval is *final*, and returned, once ``look_ahead_s`` of stream time has passed after
its offset: later frames can no longer move its offset. Meanwhile its bounds as they stand are
in ``provisional`` (onset and apex frames), so that a caller can start the work an interval
needs during the look-ahead instead of after it.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from streamer.spotting.intervals import SpottedInterval, interval_kind
from streamer.spotting.params import DetectParams
from streamer.spotting.ring_buffer import IndexedRing

log = logging.getLogger(__name__)

MAD_TO_STD = 1.4826
THRESHOLD_UPDATE_S = 0.1  # the threshold is re-estimated this often (cheaper than every frame)


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of odd-or-even ``width`` with edge values repeated (same length as input)."""
    if width <= 1 or len(values) == 0:
        return values.astype(np.float64, copy=True)
    left = (width - 1) // 2
    padded = np.pad(values.astype(np.float64), (left, width - 1 - left), mode="edge")
    sums = np.cumsum(np.concatenate(([0.0], padded)))
    return (sums[width:] - sums[:-width]) / width


def frames_for(seconds: float, fps: float, minimum: int = 1) -> int:
    """A duration in seconds as a whole number of frames at ``fps`` (at least ``minimum``)."""
    return max(minimum, round(seconds * fps))


class SignalHistory(IndexedRing):
    """Recent signal values per frame: raw, causally smoothed, and whether the frame was quiet."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.raw = np.zeros(capacity)
        self.smooth = np.zeros(capacity)
        self.quiet = np.zeros(capacity, dtype=bool)

    def push(self, index: int, t: float, raw: float, smooth: float, quiet: bool) -> int:
        slot = self._next_slot(index, t)
        self.raw[slot], self.smooth[slot], self.quiet[slot] = raw, smooth, quiet
        return slot

    def ordered_slots(self, start_position: int = 0) -> np.ndarray:
        """Slots from ``start_position`` (0 = oldest held) to the newest, in time order."""
        first = self._count - len(self)
        return (np.arange(first + start_position, self._count)) % self.capacity

    def recent(self, n: int) -> np.ndarray:
        """The causally smoothed values of the last ``n`` frames (fewer if fewer are held), oldest first."""
        return self.smooth[self.ordered_slots(max(0, len(self) - n))]

    def position_of(self, index: int) -> int:
        """Position (0 = oldest held) of frame ``index``."""
        return (self.slot(index) - (self._count - len(self))) % self.capacity


class _Region:
    """A run of frames above the threshold, from its first to its last frame above."""

    __slots__ = ("first", "first_t", "last", "last_t", "peak", "too_long")

    def __init__(self, index: int, t: float, value: float) -> None:
        self.first, self.first_t, self.last, self.last_t = index, t, index, t
        self.peak = value  # highest smoothed value so far
        self.too_long = False  # above threshold for longer than any expression: dropped when it ends


class SignalDetector:
    """Turns (frame, time, value) samples into final :class:`SpottedInterval` s; see the module doc."""

    def __init__(self, params: DetectParams, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.params = params
        self.fps = fps
        span_s = params.baseline_s + params.max_duration_s + params.look_ahead_s + params.merge_gap_s + 1.0
        self.history = SignalHistory(math.ceil(span_s * fps) + 8)
        self._smooth_n = frames_for(params.smooth_s, fps)
        # The last raw values, for the causal moving average. Summed afresh each frame (math.fsum:
        # exactly rounded, whatever slot holds what) rather than kept as a running sum, whose rounding
        # errors would stay in it forever: the average is then a function of the window alone, so a
        # detector started later on the same frames reaches the same values (chunked mer analyze).
        self._recent = np.zeros(self._smooth_n)
        self._last_update: int | None = None  # the interval of stream time (THRESHOLD_UPDATE_S) of the last update
        self._warmup_n = frames_for(params.warmup_s, fps, minimum=3)
        self.baseline = 0.0  # median of the quiet smoothed signal
        self.threshold = math.inf  # until enough quiet history exists
        self.value = 0.0  # last raw value
        self.smoothed = 0.0  # last causally smoothed value
        self.quiet = True  # whether the last frame was below the threshold
        self._open: _Region | None = None
        self._pending: list[_Region] = []
        self._last_offset = -1
        self.closed = False  # the last frame closed a region
        self.released = False  # the last frame closed a region that fell to its release level, not the threshold
        self._refractory = False  # after a release: no new region until the signal is back under the threshold
        # Regions whose bounds are known but still inside the look-ahead: {region's first frame:
        # (onset, apex)}. A caller may start work on them early (the pipeline classifies them).
        self.provisional: dict[int, tuple[int, int]] = {}

    def push(self, index: int, t: float, value: float) -> list[SpottedInterval]:
        """Add one frame's signal value; returns the intervals that became final."""
        n = self._smooth_n
        slot = self.history._count % n
        self._recent[slot] = value
        smoothed = math.fsum(self._recent) / min(self.history._count + 1, n)
        self.value, self.smoothed = float(value), float(smoothed)
        self.quiet = not smoothed > self.threshold
        self.history.push(index, t, value, smoothed, self.quiet)
        # Once per whole interval of stream time (not every n frames since this face appeared), so that
        # a detector started partway through a video updates on the same frames as one started earlier.
        interval = math.floor(t / THRESHOLD_UPDATE_S)
        if self._last_update is not None and interval > self._last_update:
            self._update_threshold(t)
        self._last_update = interval if self._last_update is None else max(self._last_update, interval)
        self._track_regions(index, t)
        return self._finalize(t, flushing=False)

    def flush(self) -> list[SpottedInterval]:
        """End of stream: close any open region and return what can be spotted with the data there is."""
        if self._open is not None and not self._open.too_long:
            self._pending.append(self._open)
        self._open = None
        latest_t = self.history.latest_t
        return self._finalize(latest_t if latest_t is not None else 0.0, flushing=True)

    @property
    def settling(self) -> bool:
        """After a release, until the signal is back under the threshold (no region opens meanwhile)."""
        return self._refractory

    def _update_threshold(self, t: float) -> None:
        history = self.history
        held = history.indices >= 0
        mask = held & history.quiet & (history.times >= t - self.params.baseline_s)
        if np.count_nonzero(mask) < self._warmup_n:
            return
        quiet = history.smooth[mask]
        median = float(np.median(quiet))
        spread = MAD_TO_STD * float(np.median(np.abs(quiet - median)))
        self.baseline = median
        self.threshold = max(median + self.params.threshold_k * spread, self.params.min_threshold)

    def _track_regions(self, index: int, t: float) -> None:
        """Open, extend and close the region of frames above the threshold. A region also ends once
        the signal has fallen to ``release_fraction`` of its peak's rise (for ``merge_gap_s``): after
        an expression the signal need not return under the threshold (the face, or the reference the
        signal is measured from, drifted meanwhile), and ``released`` tells the spotter to start afresh."""
        self.released = self.closed = False
        if self.quiet:
            self._refractory = False
        region = self._open
        inside = not self.quiet and not self._refractory
        if inside and region is not None:
            release = self.baseline + self.params.release_fraction * (region.peak - self.baseline)
            inside = self.smoothed > release
        if inside:
            if region is None:
                self._open = _Region(index, t, self.smoothed)
            else:
                region.last, region.last_t = index, t
                region.peak = max(region.peak, self.smoothed)
        elif region is not None and t - region.last_t > self.params.merge_gap_s:
            if region.too_long:
                log.debug("dropped frames %d..%d: above threshold for longer than any expression",
                          region.first, region.last)
            else:
                self._pending.append(region)
            self._open = None
            self.closed = True
            self.released = self._refractory = not self.quiet
        if self._open is not None and t - self._open.first_t > self.params.max_duration_s:
            self._open.too_long = True

    def _finalize(self, t: float, *, flushing: bool) -> list[SpottedInterval]:
        final: list[SpottedInterval] = []
        waiting: list[_Region] = []
        for region in self._pending:
            if not flushing and t < region.last_t + self.params.look_ahead_s:
                self._bounds(region, flushing, provisional=True)
                waiting.append(region)
                continue
            outcome = self._bounds(region, flushing)
            if outcome is None:  # the signal is still falling at the newest frame: wait for more
                waiting.append(region)
                continue
            self.provisional.pop(region.first, None)
            if outcome is not False:
                final.append(outcome)
        self._pending = waiting
        return final

    def _bounds(self, region: _Region, flushing: bool, provisional: bool = False) -> SpottedInterval | None | bool:
        """The region's interval; None to wait for more frames; False when it is filtered out or lost.

        Whenever the interval is not final yet, its onset and apex as they stand go to
        ``provisional``; with ``provisional=True`` that is all this does (returns None)."""
        history, params = self.history, self.params
        try:
            first = history.position_of(region.first)
            last = history.position_of(region.last)
        except LookupError:
            log.warning("a spotted region (frames %d..%d) left the signal history before it could be finalized",
                        region.first, region.last)
            return False
        # Look back far enough for the slowest onset; the smoothing is recomputed centred here.
        start = max(0, first - frames_for(params.max_duration_s, self.fps))
        slots = history.ordered_slots(start)
        signal = moving_average(history.raw[slots], self._smooth_n)
        times, indices = history.times[slots], history.indices[slots]
        first, last = first - start, last - start
        peak = first + int(np.argmax(signal[first:last + 1]))
        rise = signal[peak] - self.baseline
        level = self.baseline + params.boundary_fraction * rise
        valley = self.baseline + params.valley_fraction * rise
        onset = _walk(signal, peak, -1, level, valley)
        offset = _walk(signal, peak, +1, level, valley)
        onset_index = max(int(indices[onset]), self._last_offset + 1)
        still_falling = offset == len(signal) - 1 and signal[offset] > level
        in_look_ahead = history.latest_t < times[offset] + params.look_ahead_s
        if provisional or (not flushing and (still_falling or in_look_ahead)):
            if onset_index <= int(indices[peak]):
                self.provisional[region.first] = (onset_index, int(indices[peak]))
            return None
        self.provisional.pop(region.first, None)
        if onset_index > int(indices[offset]):
            return False
        onset = int(np.searchsorted(indices, onset_index))
        duration = float(times[offset] - times[onset])
        if not params.min_duration_s <= duration <= params.max_duration_s:
            log.debug("dropping frames %d..%d: %.3f s is outside the duration bounds", indices[onset], indices[offset], duration)
            return False
        self._last_offset = int(indices[offset])
        return SpottedInterval(
            onset=int(indices[onset]), apex=int(indices[peak]), offset=int(indices[offset]),
            onset_t=float(times[onset]), apex_t=float(times[peak]), offset_t=float(times[offset]),
            kind=interval_kind(float(times[onset]), float(times[offset]), params.micro_max_s),
            score=float(signal[peak]), intensity=float(rise),
        )


class DetectorSpotter:
    """What a spotter built on a :class:`SignalDetector` reports through it: the spotters
    (``FlowSpotter``, ``LbpSpotter``) differ in the signal they compute, not in how it is read."""

    detector: SignalDetector

    @property
    def signal(self) -> float:
        """The last value pushed to the detector, for the per-frame CSV (the flow spotter's: this
        frame's motion in crop pixels; the LBP spotter's: a contrast that lags by its window)."""
        return self.detector.value

    @property
    def threshold(self) -> float:
        return self.detector.threshold

    @property
    def provisional(self) -> dict[int, tuple[int, int]]:
        """Intervals still in the look-ahead: {region id: (onset frame, apex frame)} as they stand."""
        return self.detector.provisional

    def flush(self) -> list[SpottedInterval]:
        return self.detector.flush()


def _walk(signal: np.ndarray, peak: int, step: int, level: float, valley: float) -> int:
    """Walk from ``peak`` in direction ``step`` to the boundary frame (see the module doc, step 4).

    Stops on the first frame at or below ``level`` (that frame, the last neutral-looking one,
    is the boundary), or at a local minimum below ``valley`` (the signal rises again there).
    """
    j, end = peak, (0 if step < 0 else len(signal) - 1)
    while j != end:
        nxt = j + step
        if signal[nxt] <= level:
            return nxt
        if signal[nxt] > signal[j] and signal[j] < valley:
            return j
        j = nxt
    return j

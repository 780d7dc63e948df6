"""Preallocated per-face history: the last few seconds of aligned crops, keyed by frame index.

Spotters look back in time (flow against a frame ``k`` seconds earlier, LBP features of
the frames around the current one), so each face keeps a ring of its recent frames. All
storage is allocated once; ``push`` copies into the next slot, so the steady state makes
no new arrays however long the stream runs. Frame indices only increase but may skip
(frames without this face, dropped frames), so lookup by index uses the stored indices,
not arithmetic on a frame count.
"""

from __future__ import annotations

import numpy as np

from engines.errors import InputError

N_POINTS = 68


class FrameEvictedError(LookupError):
    """The asked-for frame was in the ring once but has been overwritten by newer frames."""


class IndexedRing:
    """Slot bookkeeping shared by every ring keyed by increasing frame index and time.

    Subclasses own the payload arrays; this class maps a frame index or a time to the
    slot that holds it, and says clearly why a frame is not there.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.indices = np.full(capacity, -1, dtype=np.int64)
        self.times = np.zeros(capacity, dtype=np.float64)
        self._count = 0  # frames pushed since creation (or clear)

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    @property
    def latest_index(self) -> int | None:
        return int(self.indices[self._latest_slot]) if self._count else None

    @property
    def oldest_index(self) -> int | None:
        return int(self.indices[self._slot_of_position(0)]) if self._count else None

    @property
    def latest_t(self) -> float | None:
        return float(self.times[self._latest_slot]) if self._count else None

    def clear(self) -> None:
        self._count = 0
        self.indices.fill(-1)

    def __contains__(self, index: int) -> bool:
        try:
            self.slot(index)
        except LookupError:
            return False
        return True

    def _next_slot(self, index: int, t: float) -> int:
        """Claim the slot for a new frame after checking that time and index move forward."""
        if self._count:
            latest = int(self.indices[self._latest_slot])
            if index <= latest:
                raise InputError(f"frame {index}: frame indices must increase (last pushed was {latest})", row=index)
            if t < self.times[self._latest_slot]:
                raise InputError(
                    f"frame {index}: timestamp {t} is earlier than the previous frame's "
                    f"{float(self.times[self._latest_slot])}", row=index)
        slot = self._count % self.capacity
        self.indices[slot] = index
        self.times[slot] = t
        self._count += 1
        return slot

    @property
    def _latest_slot(self) -> int:
        return (self._count - 1) % self.capacity

    def _slot_of_position(self, position: int) -> int:
        """Slot of the ``position``-th oldest frame still held (0 = oldest)."""
        first = self._count - len(self)
        return (first + position) % self.capacity

    def slot(self, index: int) -> int:
        """The slot holding frame ``index``; FrameEvictedError if it was overwritten, KeyError if never pushed."""
        if not self._count:
            raise KeyError(f"frame {index} is not in the ring: nothing has been pushed yet")
        latest = int(self.indices[self._latest_slot])
        oldest = int(self.indices[self._slot_of_position(0)])
        if index > latest:
            raise KeyError(f"frame {index} is not in the ring yet (latest is {latest})")
        if index < oldest:
            if self._count > self.capacity:
                raise FrameEvictedError(
                    f"frame {index} has been overwritten: the ring holds {self.capacity} frames, "
                    f"oldest now {oldest}, latest {latest}")
            raise KeyError(f"frame {index} was never pushed (first pushed was {oldest})")
        # Fast path: no skipped indices between here and the latest frame.
        back = latest - index
        if back < len(self):
            slot = (self._latest_slot - back) % self.capacity
            if self.indices[slot] == index:
                return slot
        position = self._search(lambda s: int(self.indices[s]), index)
        slot = self._slot_of_position(position)
        if self.indices[slot] != index:
            raise KeyError(f"frame {index} was skipped (never pushed)")
        return slot

    def slot_at_or_before(self, t: float) -> int | None:
        """Slot of the latest frame with time <= ``t``; None when every held frame is later."""
        if not self._count or self.times[self._slot_of_position(0)] > t:
            return None
        position = self._search(lambda s: float(self.times[s]), t, right=True) - 1
        return self._slot_of_position(position)

    def _search(self, key, value, right: bool = False) -> int:
        """Binary search over positions (oldest first): first position whose key is >= value (> if right)."""
        low, high = 0, len(self)
        while low < high:
            middle = (low + high) // 2
            k = key(self._slot_of_position(middle))
            if k < value or (right and k == value):
                low = middle + 1
            else:
                high = middle
        return low


class FaceRingBuffer(IndexedRing):
    """The last ``capacity`` aligned crops (``size`` x ``size`` uint8) of one face with times and landmarks.

    With ``color=True`` the ring also keeps each frame's colour crop (``size`` x ``size`` x 3,
    the order the caller pushes), for engines whose model looks at colour frames; grey-only
    engines do not pay for it.
    """

    def __init__(self, capacity: int, size: int, color: bool = False) -> None:
        super().__init__(capacity)
        self.size = size
        self.gray = np.zeros((capacity, size, size), dtype=np.uint8)
        self.points = np.zeros((capacity, N_POINTS, 2), dtype=np.float32)
        self.color = np.zeros((capacity, size, size, 3), dtype=np.uint8) if color else None

    def push(self, gray: np.ndarray, t: float, index: int, points: np.ndarray, color: np.ndarray | None = None) -> int:
        """Copy one frame into the ring (overwriting the oldest when full); returns its slot."""
        if gray.shape != (self.size, self.size) or gray.dtype != np.uint8:
            raise InputError(f"frame {index}: expected a {self.size}x{self.size} uint8 crop, "
                             f"got {gray.dtype} {gray.shape}", row=index)
        if points.shape != (N_POINTS, 2):
            raise InputError(f"frame {index}: expected ({N_POINTS}, 2) landmarks, got {points.shape}", row=index)
        if self.color is not None and (color is None or color.shape != (self.size, self.size, 3)):
            got = "none" if color is None else f"{color.dtype} {color.shape}"
            raise InputError(f"frame {index}: this ring keeps colour crops; expected {self.size}x{self.size}x3, "
                             f"got {got}", row=index)
        slot = self._next_slot(index, t)
        np.copyto(self.gray[slot], gray)
        np.copyto(self.points[slot], points, casting="same_kind")
        if self.color is not None:
            np.copyto(self.color[slot], color)
        return slot

    def frames_between(self, first: int, last: int, color: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the held crops with ``first <= index <= last``, oldest first, and their indices.

        Raises FrameEvictedError when ``first`` has left the ring (the clip would be cut short),
        KeyError when ``last`` has not arrived yet.
        """
        if color and self.color is None:
            raise ValueError("this ring keeps no colour crops (create it with color=True)")
        if first not in self:
            self._check_first(first)
        self.slot(last)
        positions = [p for p in range(len(self)) if first <= self.indices[self._slot_of_position(p)] <= last]
        slots = [self._slot_of_position(p) for p in positions]
        store = self.color if color else self.gray
        return store[slots].copy(), self.indices[slots].copy()

    def _check_first(self, first: int) -> None:
        """A clip may start on a frame without this face (skipped), but not before the ring's memory."""
        oldest = self.oldest_index
        if oldest is None or (first < oldest and self._count > self.capacity):
            raise FrameEvictedError(f"frame {first} has been overwritten: the ring holds {self.capacity} frames, "
                                    f"oldest now {oldest}")

    def get(self, index: int) -> tuple[np.ndarray, float, np.ndarray]:
        """(crop, time, landmarks) of frame ``index``; the arrays are views into the ring (valid until overwritten)."""
        slot = self.slot(index)
        return self.gray[slot], float(self.times[slot]), self.points[slot]

    @property
    def fill(self) -> float:
        """Fraction of the ring in use (0..1), for the ring-buffer fill metric."""
        return len(self) / self.capacity

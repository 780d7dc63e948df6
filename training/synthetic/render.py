"""Turn an identity, its events and its distractors into frames.

Per frame: the expression and blink displacement fields, each scaled by its timing's
strength, are summed and inverted (so skin moves by exactly the stated displacement),
composed with the head pose (a similarity about the face centre) and applied to the
neutral image by one backward warp (``cv2.remap``, bicubic). Then illumination gain and
offset, then Gaussian sensor noise, then rounding to 8 bits.

Every frame is a pure function of its index: noise comes from a generator seeded with
(clip noise seed, frame index), so frames can be rendered in any order or in parallel
and still be byte-identical.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from engines.errors import InputError
from training.synthetic.action_units import expression_field, face_region
from training.synthetic.distractors import DistractorPlan, blink_anchors
from training.synthetic.events import Event
from training.synthetic.fields import anchored_field, inverse_displacement, max_fold_free_amplitude
from training.synthetic.identities import Identity
from training.synthetic.landmarks import FaceFrame

NO_POSE = (0.0, 0.0, 0.0)


class Renderer:
    """Frames of one clip; ``frame(i)`` is deterministic and independent of other frames."""

    def __init__(
        self, identity: Identity, events: Sequence[Event], plan: DistractorPlan, noise_seed: int
    ) -> None:
        self.identity = identity
        self.events = tuple(events)
        self.plan = plan
        self.noise_seed = noise_seed
        self.face = FaceFrame(identity.landmarks)
        self.region = face_region(self.face, identity.size, blink_anchors(self.face))
        self.event_fields = [expression_field(e.action_units, self.face, self.region) for e in self.events]
        for event, unit in zip(self.events, self.event_fields):
            limit = max_fold_free_amplitude(unit)
            if event.amplitude_px > limit:
                raise InputError(
                    f"amplitude {event.amplitude_px:.2f} px of {'+'.join(event.action_units)} would fold the face "
                    f"(at most {limit:.2f} px at this face size); lower the amplitude or enlarge the face"
                )
        self.blink_field = anchored_field(blink_anchors(self.face), self.region)
        width, height = identity.size
        self._grid = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))

    @staticmethod
    def blink_limit(identity: Identity) -> float:
        """Largest blink displacement (px) that keeps the eyelid warp fold-free for this face."""
        face = FaceFrame(identity.landmarks)
        region = face_region(face, identity.size, blink_anchors(face))
        return max_fold_free_amplitude(anchored_field(blink_anchors(face), region))

    def displacement(self, index: int) -> np.ndarray | None:
        """Forward displacement (px) on :attr:`region` at frame ``index``; None when the face is at rest."""
        total = None
        parts = [(e.timing.strength(index) * e.amplitude_px, f) for e, f in zip(self.events, self.event_fields)]
        parts += [(b.timing.strength(index) * b.amplitude_px, self.blink_field) for b in self.plan.blinks]
        for scale, unit in parts:
            if scale > 0.0:
                total = unit * scale if total is None else total + unit * scale
        return total

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as BGR uint8."""
        image = self._warped(index)
        gain, offset = self.plan.light(index)
        if (gain, offset) != (1.0, 0.0):
            image = image * np.float32(gain) + np.float32(offset)
        if self.plan.noise_sigma > 0.0:
            rng = np.random.default_rng([self.noise_seed, index])
            image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(self.plan.noise_sigma)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    def frames(self, n_frames: int) -> Iterator[np.ndarray]:
        for index in range(n_frames):
            yield self.frame(index)

    def _warped(self, index: int) -> np.ndarray:
        neutral = self.identity.image
        forward = self.displacement(index)
        pose = self.plan.head_pose(index)
        if forward is None and pose == NO_POSE:
            return neutral
        backward = None if forward is None else inverse_displacement(forward)
        r = self.region
        if pose == NO_POSE:  # only the face region moves: warp just that rectangle
            grid_x, grid_y = (g[r.y0:r.y1, r.x0:r.x1] for g in self._grid)
            patch = cv2.remap(neutral, grid_x - backward[..., 0], grid_y - backward[..., 1],
                              interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
            image = neutral.copy()
            image[r.y0:r.y1, r.x0:r.x1] = patch
            return image
        map_x, map_y = self._unposed(pose)
        if backward is not None:
            shift = cv2.remap(backward, map_x - r.x0, map_y - r.y0, interpolation=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            map_x, map_y = map_x - shift[..., 0], map_y - shift[..., 1]
        return cv2.remap(neutral, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)

    def _unposed(self, pose: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Where each output pixel comes from before the head moved: the inverse similarity."""
        dx, dy, degrees = pose
        cx, cy = self.face.centre
        angle = math.radians(degrees)
        cos, sin = math.cos(angle), math.sin(angle)
        x = self._grid[0] - np.float32(cx + dx)
        y = self._grid[1] - np.float32(cy + dy)
        return (np.float32(cos) * x + np.float32(sin) * y + np.float32(cx),
                np.float32(-sin) * x + np.float32(cos) * y + np.float32(cy))

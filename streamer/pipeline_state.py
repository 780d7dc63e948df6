"""A fingerprint of everything in a running pipeline that decides its future output.

Splitting a video into chunks that run in parallel is only exact if each chunk, started a
little before its share of the video, reaches the very state the single pass has at some
frame: from there on the same code on the same frames gives the same rows and events. The
face tracker and the spotters have long memories (the alignment smoother, the landmark
average, ten seconds of spotting signal, the threshold learnt from it, the reference frame),
so no fixed warm-up can promise that; :func:`state_digest` lets the merge *check* it.

The digest walks the pipeline's objects and hashes every attribute, except the few that
never change what is computed next (``SKIPPED``: wall-clock readings, statistics, timings,
caches rebuilt from hashed values, the engine, and the landmark backend, which keeps nothing
from one frame to the next: dlib, and MediaPipe in image mode). A new attribute is therefore
hashed by default: at worst two chunks then never agree and the video is analysed in one
piece, never merged wrongly. What is equal in effect is hashed in one canonical form:

* Rings (``IndexedRing``) are hashed oldest entry first, with their length and whether they
  have turned over, so a ring that has turned over many times equals one that just did; so
  are the arrays kept per ring slot beside a ring (the flow spotter's calm flags, the signal
  detector's last raw values).
* Track ids become their rank among the live tracks: a chunk numbers its faces from 0, the
  single pass from wherever it is; the merge renumbers them (:mod:`streamer.chunks`).
* The signal detector's last interval offset is only ever compared with frames of its
  history, so every offset older than the history counts as one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import struct

import numpy as np
from pydantic import BaseModel

from streamer.spotting.ring_buffer import IndexedRing

__all__ = ["SKIPPED", "state_digest"]

# Attributes that do not decide what the pipeline computes next (see the module doc).
SKIPPED = frozenset({
    "stats", "metrics", "recognizer", "emit", "make_spotter", "stream_id",  # Pipeline: counters, I/O, factories
    "captured",  # _Face: capture wall-clock times, only for event latency
    "motion_s", "inference_s",  # Recognition: timings
    "backend", "detections_run", "faces_over_limit", "_ids",  # FaceTracker: memoryless backend, counters, the id source
    "_engine", "_fit_canvas", "_fit_samples", "_fit_inverse", "_fit_xs", "_fit_ys",  # FlowSpotter: cv2 object, caches
})


def state_digest(pipeline) -> bytes:
    """16-byte digest of ``pipeline``'s state after the last processed frame (see the module doc)."""
    ranks = {track_id: rank for rank, track_id in enumerate(pipeline.tracker.track_ids)}
    for track_id in pipeline._faces:  # faces the tracker ended this frame are already gone
        ranks.setdefault(track_id, len(ranks))
    hasher = _Hasher(ranks)
    hasher.add(pipeline)
    return hasher.digest()


class _Hasher:
    def __init__(self, ranks: dict[int, int]) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self._ranks = ranks

    def digest(self) -> bytes:
        return self._hash.digest()

    def _tag(self, text: str) -> None:
        self._hash.update(text.encode())
        self._hash.update(b"\0")

    def add(self, value) -> None:
        update = self._hash.update
        if value is None or isinstance(value, (bool, str, bytes)):
            self._tag(f"{type(value).__name__}:{value!r}")
        elif isinstance(value, (int, np.integer)):
            self._tag(f"i:{int(value)}")
        elif isinstance(value, (float, np.floating)):
            update(b"f" + struct.pack("<d", float(value)))
        elif isinstance(value, np.ndarray):
            self._array(value)
        elif isinstance(value, (list, tuple)):
            self._tag(f"seq:{len(value)}")
            for item in value:
                self.add(item)
        elif isinstance(value, dict):
            self._tag(f"dict:{len(value)}")
            for key, item in value.items():
                self.add(key)
                self.add(item)
        elif isinstance(value, (set, frozenset)):
            self._tag(f"set:{sorted(value)!r}")
        elif isinstance(value, BaseModel):
            self._tag(f"{type(value).__name__}:{value.model_dump_json()}")
        elif isinstance(value, IndexedRing):
            self._ring(value)
        elif isinstance(value, itertools.count):
            raise TypeError("an id counter reached the digest; name it in SKIPPED")
        elif dataclasses.is_dataclass(value) or hasattr(value, "__dict__") or hasattr(value, "__slots__"):
            self._object(value)
        else:
            raise TypeError(f"cannot fingerprint a {type(value).__name__}; add it to SKIPPED or teach state_digest")

    def _array(self, array: np.ndarray) -> None:
        self._tag(f"a:{array.dtype.str}:{array.shape}")
        self._hash.update(np.ascontiguousarray(array).data)

    def _object(self, value) -> None:
        cls = type(value)
        self._tag(f"obj:{cls.__module__}.{cls.__qualname__}")
        for name, item in sorted(_attributes(value).items()):
            if name in SKIPPED:
                continue
            self._tag(name)
            if name == "track_id":
                self.add(self._ranks.get(item, -1))
            elif name == "_faces" and isinstance(item, dict):  # Pipeline: track id -> face state
                self.add({self._ranks.get(key, -1): face for key, face in item.items()})
            elif name == "_calm" and getattr(value, "buffer", None) is not None:  # FlowSpotter: one per buffer slot
                self.add(item[_held_slots(value.buffer)])
            elif name == "_recent" and hasattr(value, "history"):  # SignalDetector: ring of the last raw values
                self.add(np.roll(item, -(value.history._count % len(item))))
            elif name == "_last_offset" and hasattr(value, "history"):
                # SignalDetector: onsets are kept after the last interval's offset, but an onset is always a
                # frame of the history, so every offset older than the history's oldest frame acts alike.
                oldest = value.history.oldest_index
                self.add(item if oldest is None else max(item, oldest - 1))
            else:
                self.add(item)

    def _ring(self, ring: IndexedRing) -> None:
        """A ring as its held entries, oldest first, whatever slot the oldest happens to sit in."""
        slots = _held_slots(ring)
        self._tag(f"ring:{type(ring).__qualname__}:{ring.capacity}:{len(ring)}:{ring._count > ring.capacity}")
        for name, item in sorted(_attributes(ring).items()):
            if name in ("capacity", "_count"):
                continue
            self._tag(name)
            if isinstance(item, np.ndarray) and item.ndim and item.shape[0] == ring.capacity:
                self.add(item[slots])
            else:
                self.add(item)


def _held_slots(ring: IndexedRing) -> np.ndarray:
    first = ring._count - len(ring)
    return np.arange(first, ring._count) % ring.capacity


def _attributes(value) -> dict:
    found = dict(getattr(value, "__dict__", {}))
    for cls in type(value).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if hasattr(value, name):
                found[name] = getattr(value, name)
    return found

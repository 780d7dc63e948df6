"""MediaPipe's 478-point face mesh expressed in dlib's 68-point scheme.

Each dlib point is one MediaPipe mesh vertex, or the midpoint of two where dlib's point lies
between vertices (brows: dlib follows the middle of the brow, the mesh its upper and lower
edges). How the table was derived (docs/faces.md has the details):

1. Both backends ran on 399 real apex face crops of the MEGC2019 composite (dlib HOG + 68-point
   predictor; MediaPipe Tasks FaceLandmarker, 478 points), in image pixels.
2. For every dlib point, the mesh vertex with the smallest mean distance over the 399 faces
   (divided by the outer-eye-corner distance) was kept. The midpoint of two of the 10 nearest
   vertices replaced it only when it cut that mean distance by more than 20 %.
3. The table was then checked on faces it was not fitted on (the astronaut and Grace Hopper
   photos; see tests/test_faces_backends.py): the mean distance is 3.2 % and 4.8 % of the
   outer-eye-corner distance. Mirror pairs came out mirror-symmetric in the mesh for the
   eyes, brows, nose and most of the jaw and lips, as they should.

Over the 399 faces the mean distance per face is 3.2 % of that distance (median 2.3 %,
95th percentile 12 %). The jaw points agree least (5-8 %): dlib and the mesh draw the face
outline differently.
"""

from __future__ import annotations

import numpy as np

# Index i holds the mesh vertices whose mean is dlib point i.
MP_TO_68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16 (image left to right)
    (127, 162), (234,), (93, 177), (215,), (172,), (136, 150), (149,), (148,), (152,),
    (377,), (378,), (365, 379), (397,), (435,), (366, 401), (447,), (356, 389),
    # brows 17-21 and 22-26
    (70,), (52, 68), (69, 223), (66, 107), (8, 107),
    (8, 336), (296, 336), (299, 443), (282, 298), (300,),
    # nose bridge 27-30, nostrils 31-35
    (168,), (196, 351), (5, 195), (4,),
    (240,), (97,), (94, 164), (326,), (460,),
    # eyes 36-41 and 42-47
    (33,), (159, 160), (158,), (155,), (153,), (144,),
    (382,), (385,), (386, 387), (263,), (373,), (380,),
    # outer lips 48-59
    (61,), (39, 40), (37,), (0,), (267,), (269, 304), (291,), (405,), (314,), (17,), (84,), (89, 182),
    # inner lips 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)

_FIRST = np.array([ix[0] for ix in MP_TO_68])
_SECOND = np.array([ix[-1] for ix in MP_TO_68])


def mesh_to_68(mesh_points: np.ndarray) -> np.ndarray:
    """(478 or 468, 2) mesh points -> (68, 2) float32 points in dlib's scheme."""
    mesh = np.asarray(mesh_points, dtype=np.float32)
    return (mesh[_FIRST] + mesh[_SECOND]) * np.float32(0.5)

"""The filters of a question's captions: its time window, its cameras, its place."""
from dataclasses import dataclass

import numpy as np

from rats_ros.errors import QuestionError


@dataclass(frozen=True)
class Place:
    """A spatial filter: captions whose pose lies within ``radius`` metres of ``(x, y, z)``.

    :raises QuestionError: a coordinate or radius that is not finite, or a radius <= 0.
    """

    x: float
    y: float
    z: float
    radius: float

    def __post_init__(self):
        values = (self.x, self.y, self.z, self.radius)
        if not all(np.isfinite(values)) or self.radius <= 0:
            raise QuestionError(f"position ({self.x}, {self.y}, {self.z}) with radius "
                                f"{self.radius}: give finite coordinates in metres and a radius "
                                "> 0")


def check_window(since_ns: int, until_ns: int):
    """:raises QuestionError: negative stamps, or ``since`` after ``until`` (``until`` 0 = open)."""
    if since_ns < 0 or until_ns < 0:
        raise QuestionError(f"time window stamps must be >= 0 ns (got since={since_ns}, "
                            f"until={until_ns}); use 0 for an open end")
    if until_ns > 0 and since_ns > until_ns:
        raise QuestionError(f"time window is inverted: since ({since_ns} ns) is after until "
                            f"({until_ns} ns); swap them or set until to 0 for 'up to now'")


def where_mask(in_window, camera: np.ndarray, pose: np.ndarray, cameras, place: Place | None):
    """``(n,)`` bool: rows in the window, of the wanted cameras, near the wanted place.

    :param in_window: ``(n,)`` bool; :param camera: ``(n,)`` camera names;
    :param pose: ``(n, 3)`` positions, NaN without pose.
    :raises QuestionError: when no row is left, naming the filter that left none.
    """
    mask = in_window.copy()
    if cameras:
        mask &= np.isin(camera, list(cameras))
        if not mask.any():
            raise QuestionError(f"no captions of cameras {sorted(cameras)} (stored cameras: "
                                f"{sorted(set(camera.tolist()))}) in the window")
    if place is not None:
        offset = pose - np.array([place.x, place.y, place.z])  # (n, 3)
        with np.errstate(invalid="ignore"):
            mask &= np.sqrt((offset ** 2).sum(axis=1)) <= place.radius  # NaN (no pose): False
        if not mask.any():
            raise QuestionError(f"no captions with a pose within {place.radius} m of "
                                f"({place.x}, {place.y}, {place.z}) in the window; widen the "
                                "radius or check pose_topic")
    return mask

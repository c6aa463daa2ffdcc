"""PoseTrack: nearest pose in time within a tolerance; untrustworthy poses refused by reason."""
import math

import pytest

from rats_ros.errors import ConfigError
from rats_ros.stream.poses import Pose, PoseTrack

SEC = 1_000_000_000


def test_the_nearest_pose_within_tolerance_or_none():
    track = PoseTrack(tolerance_s=0.5)
    for t in (3, 1, 2):  # out of order is sorted in
        assert track.add(Pose(t * SEC, x=float(t), y=0.0, z=0.0, frame="odom")) is None
    assert track.nearest(int(1.2 * SEC)).x == 1.0
    assert track.nearest(int(2.6 * SEC)).x == 3.0
    assert track.nearest(int(3.4 * SEC)).x == 3.0
    assert track.nearest(int(3.6 * SEC)) is None and track.nearest(int(0.4 * SEC)) is None
    assert PoseTrack(0.5).nearest(SEC) is None


def test_untrustworthy_poses_are_refused_by_reason_and_not_kept():
    track = PoseTrack(tolerance_s=1.0, frame="map")
    assert track.add(Pose(SEC, math.nan, 0.0, 0.0, frame="map")) == "non_finite_pose"
    assert track.add(Pose(SEC, 0.0, 0.0, 0.0, qw=math.inf, frame="map")) == "non_finite_pose"
    assert track.add(Pose(SEC, 0.0, 0.0, 0.0, frame="odom")) == "wrong_pose_frame"
    assert track.add(Pose(0, 0.0, 0.0, 0.0, frame="map")) == "zero_pose_stamp"
    assert len(track) == 0
    first_seen = PoseTrack(tolerance_s=1.0)  # no frame given: the first pose's frame holds
    assert first_seen.add(Pose(SEC, 0.0, 0.0, 0.0, frame="odom")) is None
    assert first_seen.add(Pose(2 * SEC, 0.0, 0.0, 0.0, frame="map")) == "wrong_pose_frame"


def test_capacity_keeps_the_newest_and_bad_settings_are_refused():
    track = PoseTrack(tolerance_s=0.1, capacity=3)
    for t in range(1, 6):
        track.add(Pose(t * SEC, float(t), 0.0, 0.0))
    assert len(track) == 3 and track.nearest(SEC) is None and track.nearest(5 * SEC).x == 5.0
    with pytest.raises(ConfigError, match="tolerance"):
        PoseTrack(tolerance_s=0.0)
    assert Pose(SEC, 1.0, 2.0, 3.0, frame="map").record_fields()["pose_y"] == 2.0

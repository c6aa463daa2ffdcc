"""The caption record: one definition that the captioner fills, the store keeps and the node
publishes. The store's columns and the ``rats_ros/Caption`` message conversion derive from it.
"""
from dataclasses import dataclass, fields


@dataclass
class CaptionRecord:
    """What every layer knows of one clip's caption.

    :param clip_index: position of the clip in its stream (continues across restarts).
    :param start_ns: header stamp of the clip's first frame.
    :param end_ns: header stamp of the clip's last frame (the caption's stamp).
    :param text: the caption.
    :param frames: frames in the clip.
    :param visual_tokens: the clip's visual tokens seen by the LLM.
    :param kept_tokens: of those, how many the memory kept.
    :param memory_tokens: memory tokens in front of the clip when it was captioned.
    :param processing_time: seconds spent captioning the clip.
    :param model: the captioning model's name.
    :param camera: the camera of the clip (``""`` for a node's single unnamed camera).
    :param has_pose: whether the robot's pose at the clip's end is known (``pose_*`` are then
        position in metres and orientation quaternion in ``pose_frame``; zeros otherwise).
    """

    clip_index: int
    start_ns: int
    end_ns: int
    text: str
    frames: int
    visual_tokens: int
    kept_tokens: int
    memory_tokens: int
    processing_time: float
    model: str = ""
    camera: str = ""
    has_pose: bool = False
    pose_x: float = 0.0
    pose_y: float = 0.0
    pose_z: float = 0.0
    pose_qx: float = 0.0
    pose_qy: float = 0.0
    pose_qz: float = 0.0
    pose_qw: float = 1.0
    pose_frame: str = ""


#: the record's field names, in order (the store's columns, the message's fields)
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CaptionRecord))
#: the pose fields: one ``geometry_msgs/Pose`` in the message, one column each in the store
POSE_FIELDS: tuple[str, ...] = tuple(name for name in RECORD_FIELDS
                                     if name.startswith("pose_") and name != "pose_frame")
_TYPES = {f.name: f.type for f in fields(CaptionRecord)}
_DEFAULTS = {f.name: f.default for f in fields(CaptionRecord)}


def record_values(caption, **overrides) -> dict:
    """The record fields of ``caption`` (any object that has them), as plain Python values.

    :param overrides: values that replace the object's (e.g. ``model``).
    :returns: ``{field: value}`` in :data:`RECORD_FIELDS` order, each of its declared type.
    """
    values = {name: getattr(caption, name, _DEFAULTS[name]) for name in RECORD_FIELDS} \
        | overrides
    return {name: _TYPES[name](values[name]) for name in RECORD_FIELDS}

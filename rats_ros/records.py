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


#: the record's field names, in order (the store's columns, the message's fields)
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CaptionRecord))
_TYPES = {f.name: f.type for f in fields(CaptionRecord)}


def record_values(caption, **overrides) -> dict:
    """The record fields of ``caption`` (any object that has them), as plain Python values.

    :param overrides: values that replace the object's (e.g. ``model``).
    :returns: ``{field: value}`` in :data:`RECORD_FIELDS` order, each of its declared type.
    """
    values = {name: getattr(caption, name, "") for name in RECORD_FIELDS} | overrides
    return {name: _TYPES[name](values[name]) for name in RECORD_FIELDS}

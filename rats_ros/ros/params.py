"""Parameters of the ``rats_stream`` node: one table, declared with descriptors, validated once.

Every parameter is declared at construction with a :class:`ParameterDescriptor` carrying its
description and, for numbers, its range, so ``ros2 param describe`` shows both on a robot.
:func:`read` turns the declared values into a validated :class:`NodeParams`; any value outside its
range raises :class:`~rats_ros.errors.ConfigError` whose message names the parameter, the value
and the allowed range. The node applies parameters at ``configure``; a ``ros2 param set`` while it
runs is checked by :func:`check` at once and takes effect at the next configure.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import fields, make_dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

from rats_ros.errors import ConfigError
from rats_ros.recall.stores import is_url, stream_name
from rats_ros.settings import DEFAULT_STORE_NAME, SPECS, SPECS_BY_NAME, Spec

# The table itself is ROS-free (rats_ros.settings): the CLI derives its options from it too.
__all__ = ["DEFAULT_STORE_NAME", "SPECS", "SPECS_BY_NAME", "NodeParams", "Spec", "check", "read"]
_STREAM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_CAMERA = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")
_MAX_CAMERAS = 16


class _ParamRules:
    """What :class:`NodeParams` adds to its fields: validation and derived values."""

    def __post_init__(self):
        for item in fields(self):
            problem = check(item.name, getattr(self, item.name))
            if problem:
                raise ConfigError(problem)

    @property
    def clip_duration_s(self) -> float:
        """Stream seconds covered by one full clip (the real-time budget per clip)."""
        return self.clip_frames / self.fps

    def camera_streams(self) -> list[tuple[str, str]]:
        """``(camera, stream id)`` per camera: ``stream_id`` alone for the single unnamed
        camera, ``<stream_id>/<camera>`` for named ones."""
        return [(camera, stream_name(self.stream_id, camera)) for camera in self.cameras]

    def resolved_store_path(self) -> str:
        """The store: a PostgreSQL URL as given, ``store_path`` with ``~`` expanded, or the
        ROS_HOME default file."""
        if is_url(self.store_path):
            return self.store_path
        if self.store_path:
            return os.path.expanduser(self.store_path)
        return _ros_home_file(DEFAULT_STORE_NAME)

    def resolved_cache_dir(self) -> str:
        """The tile cache directory ("" for ``none``: nothing kept on disk)."""
        if self.cache_dir == "none":
            return ""
        return os.path.expanduser(self.cache_dir) if self.cache_dir else \
            _ros_home_file("rats_ros/cache")

    def resolved_spool_path(self) -> str:
        """The spool file of a PostgreSQL store."""
        return os.path.expanduser(self.spool_path) if self.spool_path else \
            _ros_home_file("rats_ros/spool.db")


def _ros_home_file(name: str) -> str:
    ros_home = os.environ.get("ROS_HOME") or os.path.join("~", ".ros")
    return os.path.expanduser(os.path.join(ros_home, name))


#: Validated parameter values: one frozen field per :data:`SPECS` entry, of its default's type.
#: :raises ConfigError: when a value is out of its range; the message gives the allowed range.
NodeParams = make_dataclass("NodeParams", [(spec.name, type(spec.default)) for spec in SPECS],
                            bases=(_ParamRules,), frozen=True)


def check(name: str, value) -> str | None:
    """Check one parameter value.

    :param name: parameter name (unknown names are not ours and pass).
    :param value: the proposed value.
    :returns: ``None`` when allowed, else a message naming the value and the allowed range.
    """
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        return None
    wanted = type(spec.default)
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if wanted is tuple and isinstance(value, list):  # rclpy gives string arrays as lists
        value = tuple(value)
    if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
        return (f"parameter {name}={value!r} has the wrong type: expected {wanted.__name__}, "
                f"allowed {spec.allowed()}")
    bad = _bad_cameras(value) if name == "cameras" else (
        _out_of_range(spec, value) or _bad_string(name, value))
    if bad:
        return f"parameter {name}={value!r} is invalid: {bad}"
    return None


def _out_of_range(spec: Spec, value) -> str | None:
    if spec.choices and value not in spec.choices:
        return f"allowed: {spec.allowed()}"
    if spec.low is None or isinstance(value, bool):
        return None
    too_low = value <= spec.low if spec.open_low else value < spec.low
    if too_low or value > spec.high or value != value:  # value != value: NaN
        return f"allowed range is {spec.allowed()}"
    return None


def _bad_string(name: str, value) -> str | None:
    if name == "model" and not value.strip():
        return "give a checkpoint directory, a cached Hugging Face id, or tiny-random"
    if name == "device" and not _DEVICE.match(value):
        return "allowed values are 'cpu', 'cuda' or 'cuda:N'"
    if name == "stream_id" and not _STREAM_ID.match(value):
        return "use 1 to 64 letters, digits, '_', '.' or '-'"
    return None


def _bad_cameras(names: tuple) -> str | None:
    if not names or len(names) > _MAX_CAMERAS:
        return f"give 1 to {_MAX_CAMERAS} camera names"
    if names == ("",):
        return None
    if len(set(names)) != len(names) or not all(isinstance(n, str) and _CAMERA.match(n)
                                                for n in names):
        return ("camera names must be distinct relative names (letters, digits, '_', parts "
                "joined by '/'), e.g. ['front', 'rear']; [''] alone means one camera on image")
    return None


def descriptor(spec: Spec) -> ParameterDescriptor:
    """The ROS descriptor of one parameter: description, allowed values, numeric range."""
    text = spec.description
    if spec.choices:
        text += f" Allowed: {', '.join(spec.choices)}."
    desc = ParameterDescriptor(description=text, additional_constraints=spec.allowed())
    if spec.low is not None and isinstance(spec.default, float):
        desc.floating_point_range = [
            FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))]
    elif spec.low is not None:
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high))]
    return desc


def declare(node) -> None:
    """Declare every parameter on ``node`` with its descriptor and default.

    :raises ConfigError: when an override (YAML file, ``-p``) has the wrong type or is out of
        range; the message names the parameter and the allowed range.
    """
    refuse_unknown(node)
    for spec in SPECS:
        try:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except InvalidParameterTypeException as error:
            raise ConfigError(
                f"parameter {spec.name} has the wrong type ({error}); expected "
                f"{type(spec.default).__name__}, allowed {spec.allowed()} (write 1.0, not 1, "
                "for a float)") from error
        except InvalidParameterValueException as error:
            raise ConfigError(f"parameter {spec.name} refused ({error}); allowed range "
                              f"{spec.allowed()}") from error


def refuse_unknown(node) -> None:
    """Refuse an override (``-p``, a params file) that names no parameter of this node: a typo
    such as ``modle:=...`` would otherwise be ignored and the node start on a default.

    :raises ConfigError: naming the override and the closest parameter.
    """
    # rclpy keeps a node's overrides in _parameter_overrides (it has no public accessor);
    # parameters rclpy declares itself (use_sim_time, ...) are already declared here
    unknown = sorted(name for name in getattr(node, "_parameter_overrides", {})
                     if name not in SPECS_BY_NAME and not node.has_parameter(name))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, list(SPECS_BY_NAME), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"parameter {name!r} is not a parameter of this node; {hint}"
                          "docs/PARAMETERS.md lists them all")


def read(node) -> NodeParams:
    """Read the declared parameters of ``node`` into a validated :class:`NodeParams`.

    :raises ConfigError: when a value is invalid.
    """
    values = {spec.name: node.get_parameter(spec.name).value for spec in SPECS}
    return NodeParams(**{name: tuple(value) if isinstance(SPECS_BY_NAME[name].default, tuple)
                         else value for name, value in values.items()})

"""The launch file's parameter arguments: one per node parameter (:data:`params.SPECS`), empty
by default so the params file decides, typed and checked here when given (this module needs no
``launch`` package, so it is tested where launch_ros cannot be installed)."""
from __future__ import annotations

import yaml

from rats_ros.errors import ConfigError
from rats_ros.ros.params import SPECS, SPECS_BY_NAME, check

#: launch arguments that are not node parameters: (name, default, description)
LAUNCH_ONLY = (
    ("config_file", "", "Parameter file of the node (default: the package's config/stream.yaml)."),
    ("camera_topic", "/camera/image_raw", "Camera image topic; the node's `image` (raw) or "
     "`image/compressed` is remapped to it."),
    ("namespace", "", "Namespace of the node (its topics and services are relative)."),
    ("use_sim_time", "false", "Follow /clock (a bag played with --clock)."),
    ("respawn", "false", "Restart the node whenever it exits (it exits 1 on a fatal fault)."),
    ("respawn_delay", "2.0", "Seconds before a respawn."),
)


def parameter_arguments() -> list[tuple[str, str]]:
    """``(name, description)`` of every node parameter as a launch argument (default "")."""
    return [(spec.name, f"{spec.description} Empty: the params file's value (default "
             f"{spec.default!r}).") for spec in SPECS]


def overrides(values: dict[str, str]) -> dict:
    """The node parameters given as launch arguments, typed as the node declares them.

    :param values: launch argument name -> its text (empty = not given).
    :raises ConfigError: a value the node would refuse, with its allowed range.
    """
    typed = {}
    for name, text in values.items():
        if name not in SPECS_BY_NAME or text == "":
            continue
        wanted = type(SPECS_BY_NAME[name].default)
        value = text if wanted is str else yaml.safe_load(text)
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if wanted is tuple and isinstance(value, list):
            value = tuple(str(v) for v in value)
        problem = check(name, value)
        if problem:
            raise ConfigError(f"launch argument {problem}")
        typed[name] = list(value) if wanted is tuple else value
    return typed

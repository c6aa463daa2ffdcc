"""``docs/PARAMETERS.md`` written from :data:`rats_ros.ros.params.SPECS`, the one parameter
table (``python -m rats_ros.ros.param_docs`` rewrites it; test_node_params checks it is
current)."""
from __future__ import annotations

import sys
from pathlib import Path

from rats_ros.ros.params import SPECS, Spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "PARAMETERS.md"
_HEAD = """# Parameters of the `rats_stream` node

Generated from `rats_ros/ros/params.py` (`SPECS`) by `python -m rats_ros.ros.param_docs`; do not
edit by hand. Every parameter is declared with this description and range, so `ros2 param
describe` shows the same on a robot; `config/stream.yaml` sets each one (the launch file's
`config_file`). Values are checked at start-up and on
`ros2 param set` (they take effect at the next configure). Floats need a decimal point (`1.0`).

| parameter | type | default | allowed | what it does |
|---|---|---|---|---|
"""


#: the parameter types as ROS names them (``ros2 param describe``)
ROS_TYPES = {str: "string", int: "integer", float: "double", bool: "bool", tuple: "string[]"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(spec: Spec) -> str:
    value = spec.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return '`""`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(f"'{v}'" for v in value) + "]`"
    return f"`{value}`"


def markdown() -> str:
    """The whole document."""
    rows = [f"| `{s.name}` | {ROS_TYPES[type(s.default)]} | {_default(s)} | "
            f"{_cell(s.allowed())} | {_cell(s.description)} |" for s in SPECS]
    return _HEAD + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write :data:`DOC` (or print it with ``--print``). :returns: 0."""
    if argv is None:
        argv = sys.argv[1:]
    if "--print" in argv:
        print(markdown(), end="")
    else:
        DOC.write_text(markdown())
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

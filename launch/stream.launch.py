"""Launch the rats_stream node: every node parameter is a launch argument, over a params file.

    ros2 launch rats_ros stream.launch.py camera_topic:=/camera/color/image_raw \
        model:=/models/llava-onevision-qwen2-0.5b-ov-hf device:=cuda dtype:=bfloat16
    ros2 launch rats_ros stream.launch.py config_file:=/robot/rats.yaml namespace:=robot1

A parameter argument left empty takes the params file's value (``config_file``, default the
package's ``config/stream.yaml``). ``respawn:=true`` restarts the node whenever it exits: it
exits 1 on a fatal fault (a dead worker, an unexpected error), so a restart continues the stream;
it exits 2 on a refused setting, which a restart cannot fix (read the log). For several cameras
set ``cameras:="[front, rear]"`` and remap each ``<camera>/image`` in your own launch file.

This file needs ``launch`` and ``launch_ros``, which come from the ROS apt repositories on a real
robot and are not installable from PyPI: it is exercised on real installs only. On this project's
development machines the test suite parses it and tests the argument handling
(``rats_ros.ros.launch_args``); the node is started directly with ``--params-file``.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription
from rats_ros.ros.launch_args import LAUNCH_ONLY, overrides, parameter_arguments


def _node(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    config = arg("config_file") or str(
        Path(get_package_share_directory("rats_ros")) / "config" / "stream.yaml")
    values = overrides({name: arg(name) for name, _ in parameter_arguments()})
    values["use_sim_time"] = arg("use_sim_time").lower() == "true"
    camera = arg("camera_topic")
    return [LifecycleNode(
        package="rats_ros", executable="stream_node", name="rats_stream",
        namespace=arg("namespace"), output="screen", parameters=[config, values],
        respawn=arg("respawn").lower() == "true", respawn_delay=float(arg("respawn_delay")),
        remappings=[("image", camera), ("image/compressed", camera + "/compressed")])]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, default, description in LAUNCH_ONLY]
    arguments += [DeclareLaunchArgument(name, default_value="", description=description)
                  for name, description in parameter_arguments()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])

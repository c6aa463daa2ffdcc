"""Editable install for development (pip install -e .). On a robot, colcon builds CMakeLists.txt."""
from setuptools import find_packages, setup

setup(
    name="rats_ros",
    version="0.1.0",
    description="Long-term, queryable visual memory for ROS 2 robots (rLiVS streaming captioning)",
    license="Apache-2.0",
    packages=find_packages(include=["rats_ros", "rats_ros.*"]),
    package_data={"rats_ros.world": ["synthetic_world/*"]},  # the trained synthetic-world model
    python_requires=">=3.10",
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/rats_ros"]),
        ("share/rats_ros", ["package.xml"]),
        ("share/rats_ros/launch", ["launch/stream.launch.py"]),
        ("share/rats_ros/config", ["config/stream.yaml", "config/synthetic_world.yaml"]),
    ],
    entry_points={
        "console_scripts": [
            "rats-ros = rats_ros.tools.cli:main",
            "stream_node = rats_ros.ros.main:main",
        ],
    },
)

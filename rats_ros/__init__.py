"""rats_ros: long-term, queryable visual memory for ROS 2 robots.

The generated interfaces (``rats_ros.msg``, ``rats_ros.srv``) are installed into a separate prefix
by the CMake build; extending the package path lets them and this source package import as one,
as colcon's merged install does on a robot.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"

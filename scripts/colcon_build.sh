#!/usr/bin/env bash
# Build this package with colcon, as a robot does: a workspace with the package under src/, the
# ROS 2 prefix that the PyPI wheels installed into the virtual environment on the paths.
# Usage: scripts/colcon_build.sh VENV WORKSPACE INSTALL_DIR [PACKAGE_SOURCE]
#   WORKSPACE: scratch directory (src/, build/, log/ go there); INSTALL_DIR: the install tree
#   (merged layout: INSTALL_DIR/lib/python3.X/site-packages/rats_ros, lib/rats_ros/stream_node).
#   PACKAGE_SOURCE: a checkout to build (default: this one).
set -euo pipefail
venv=$(realpath "$1"); ws=$(realpath -m "$2"); install=$(realpath -m "$3")
source_dir=$(realpath "${4:-$(dirname "$0")/..}")
py="$venv/bin/python"
include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# The wheels' exported CMake targets name the wheel builder's interpreter paths; point them at ours.
{ grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null || true; } \
  | xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/include/python3.11#$include#g" \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages#$site#g"

# The package goes into the workspace as a copy of what it ships: CMake refuses exported include
# directories inside the source tree, and a checkout may hold the venv and an install/ tree.
rm -rf "$ws/src"; mkdir -p "$ws/src/rats_ros"
(cd "$source_dir" && cp -r CMakeLists.txt package.xml msg srv action rats_ros launch config \
  --parents scripts/stream_node scripts/replay_node scripts/rats-ros "$ws/src/rats_ros/")
find "$ws/src" -name __pycache__ -prune -exec rm -rf {} +

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
export PATH="$venv/bin:$PATH" LD_LIBRARY_PATH="$venv/lib:${LD_LIBRARY_PATH:-}"
log="$ws/colcon.log"
(cd "$ws" && colcon --log-base "$ws/log" build --base-paths src --build-base "$ws/build" \
  --install-base "$install" --merge-install --event-handlers console_direct- \
  --cmake-args -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$py") \
  >"$log" 2>&1 || { tail -40 "$log"; echo "colcon build failed; full log: $log" >&2; exit 1; }
echo "rats_ros built with colcon into $install"

#!/usr/bin/env bash
# Build rats_ros/msg and rats_ros/srv with CMake against the ROS 2 prefix that the PyPI wheels
# installed into the virtual environment. Usage: scripts/build_interfaces.sh VENV BUILD_DIR INSTALL_DIR
set -euo pipefail
venv=$(realpath "$1"); build=$2; install=$(realpath -m "$3")
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# The wheels' exported CMake targets name the wheel builder's interpreter paths; point them at ours.
{ grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null || true; } \
  | xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/include/python3.11#$include#g" \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages#$site#g"

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
export PATH="$venv/bin:$PATH" LD_LIBRARY_PATH="$venv/lib:${LD_LIBRARY_PATH:-}"
# CMake refuses exported include paths inside the source tree, and the venv lives in the repo:
# configure a staged copy of the package instead.
src="$build/src"; mkdir -p "$src"
cp -r "$repo/msg" "$repo/srv" "$repo/CMakeLists.txt" "$repo/package.xml" "$src/"
cmake -S "$src" -B "$build/cmake" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DRATS_ROS_INSTALL_PYTHON=OFF -DCMAKE_INSTALL_PREFIX="$install" \
  -DPython3_EXECUTABLE="$py" -DPYTHON_EXECUTABLE="$py" >"$build.log" 2>&1 \
  || { tail -40 "$build.log"; exit 1; }
cmake --build "$build/cmake" -j "$(nproc)" >>"$build.log" 2>&1 || { tail -40 "$build.log"; exit 1; }
cmake --install "$build/cmake" >>"$build.log" 2>&1 || { tail -40 "$build.log"; exit 1; }
# The generated package's __init__.py would shadow ours; our rats_ros/__init__.py extends its path.
rm -f "$install"/lib/python3*/site-packages/rats_ros/__init__.py
echo "interfaces installed in $install"

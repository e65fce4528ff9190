#!/usr/bin/env bash
# Optional: build mmcv 2.1.0 with its compiled ops from the sdist (about 27 min on 2 cores, no GPU).
# torch 2.14's headers need C++20, mmcv's setup.py asks for C++17, so we raise the flag first.
# Usage: bash tools/install_full_mmcv.sh [PYTHON]
set -euo pipefail
PY=${1:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --no-deps --no-binary :all: mmcv==2.1.0 -d "$work"
tar -xzf "$work"/mmcv-2.1.0.tar.gz -C "$work"
sed -i 's/-std=c++17/-std=c++20/g' "$work"/mmcv-2.1.0/setup.py
# mmcv-lite and mmcv share the `mmcv` package folder: remove the lite one first.
"$PY" -m pip uninstall -y mmcv-lite || true
echo "Compiling mmcv ops (MMCV_WITH_OPS=1); this takes tens of minutes..."
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip install --no-build-isolation --no-deps "$work"/mmcv-2.1.0 \
  || { echo "mmcv build failed; restoring mmcv-lite" >&2; "$PY" -m pip install mmcv-lite==2.1.0; exit 1; }
"$PY" -c "import mmcv, mmcv.ops; from mmcv.utils import ext_loader; ext_loader.load_ext('_ext', ['nms']); print('mmcv', mmcv.__version__, 'with compiled ops')"

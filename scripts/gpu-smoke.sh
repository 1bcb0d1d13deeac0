#!/usr/bin/env bash
# The one command for a bare GPU machine (its own python3 with torch, no network): prove `make train-coarse`'s path.
#
#   bash scripts/gpu-smoke.sh [--steps 20] [--batch 8] [--out outputs/gpu-smoke] ...   (python -m igr.commands.gpu_smoke --help)
#
# 1. Installs the wheels of .whl/ (made by `make gpu-bundle` where the package index is reachable) with
#    pip install --no-index --no-deps --target $IGR_SMOKE_SITE and puts that folder on PYTHONPATH: no venv, no
#    download, the machine's own torch (and whatever else it has) stays in use.
# 2. Runs the phases (igr/commands/gpu_smoke.py): synthetic 1024x768 shards; igr fit with the coarse experiment and
#    the DeepSpeed overlay on one device (sd15 architecture at random init, batch 8, 20 steps); --ckpt_path last for
#    2 more; igr export of the DeepSpeed folder; bf16 restoration (IGR, plain SD); igr eval --devices 1 --dtype bf16.
#    outputs/gpu-smoke/<card>.json is rewritten after every phase. Exit 0 when every phase passed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${IGR_SMOKE_SITE:-$PWD/.gpu-smoke/site}
shopt -s nullglob
WHEELS=${IGR_SMOKE_WHEELS:-.whl}
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]})); then
    echo "gpu-smoke: installing ${#wheels[@]} wheels from $WHEELS/ into $SITE (no index, no deps)" >&2
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
else
    echo "gpu-smoke: no wheels in $WHEELS/ (make gpu-bundle makes .whl/): using the packages this python already has" >&2
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" -m igr.commands.gpu_smoke "$@"

#!/usr/bin/env bash
# make gpu-bundle: write into .whl/ every wheel scripts/gpu-smoke.sh needs on a GPU machine without network
# (the names of scripts/gpu-bundle.txt at the versions of constraints.txt), for that machine's Python
# (GPU_PYTHON, default 3.12) on x86-64 Linux. Run where the package index is reachable. deepspeed has no wheel
# on the index (sdist only), so its pure-Python wheel is built here with DS_BUILD_OPS=0 (no CUDA ops compiled;
# the smoke run uses none). Fails when the bundle exceeds 60 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
GPU_PYTHON=${GPU_PYTHON:-3.12}
LIMIT_MIB=60
pin() {  # the exact version constraints.txt holds for package $1 (names compared as pip does)
    local want; want=$(echo "$1" | tr 'A-Z_.' 'a-z--')
    while IFS='=' read -r name _ version; do
        [[ "$(echo "$name" | tr 'A-Z_.' 'a-z--')" == "$want" ]] && { echo "$version"; return; }
    done < <(grep -v '^#' constraints.txt)
    echo "gpu-bundle: $1 is not pinned in constraints.txt" >&2; exit 1
}
rm -rf .whl && mkdir -p .whl
names=$(sed 's/#.*//' scripts/gpu-bundle.txt | tr -s ' \t' '\n' | grep -v '^$')
binary=()
for name in $names; do
    version=$(pin "$name")
    if [[ "$name" == deepspeed ]]; then
        echo "building deepspeed==$version (DS_BUILD_OPS=0)"
        DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-binary deepspeed -w .whl "deepspeed==$version"
    else
        binary+=("$name==$version")
    fi
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${binary[@]}"
count=$(ls .whl/*.whl | wc -l)
bytes=$(cat .whl/*.whl | wc -c)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "gpu-bundle: $count wheels, $mib MiB in .whl/ (limit $LIMIT_MIB MiB)"
if (( count != $(echo "$names" | wc -w) )); then
    echo "gpu-bundle: expected $(echo "$names" | wc -w) wheels" >&2; exit 1
fi
if (( bytes > LIMIT_MIB * 1048576 )); then
    echo "gpu-bundle: over $LIMIT_MIB MiB" >&2; exit 1
fi

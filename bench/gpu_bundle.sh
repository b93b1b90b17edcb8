#!/usr/bin/env bash
# Fills gpu-bundle/ (git-ignored) with everything bench/gpu_checks.sh needs on a GPU machine beyond its image
# (Python 3.12 and torch, no Optuna, no network): MNIST's four raw files, copied as real files (not links),
# and the wheels of the packages `archsearch search` imports that such an image lacks, each at the version
# this checkout's environment runs. Run it here, from any folder, with network access to the package index:
#     make gpu-bundle        (or: bash bench/gpu_bundle.sh)
# then carry gpu-bundle/ with the working tree to the GPU machine and run `bash bench/gpu_checks.sh` there.
# MNIST comes from $ARCHSEARCH_DATA, else data/ (`archsearch` downloads it there on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=gpu-bundle
python="${PYTHON:-.venv/bin/python}"
data="${ARCHSEARCH_DATA:-data}"
# Pure-Python wheels, and SQLAlchemy's binary one for CPython 3.12 on x86-64 Linux (greenlet, which it
# names, serves its asyncio only).
packages=(optuna alembic mako colorlog sqlalchemy optuna-dashboard bottle plotly narwhals kaleido
    choreographer logistro platformdirs simplejson)
platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

# Everything checked before the first write: a bad input leaves an existing bundle as it was.
sources=()
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    source="$data/MNIST/raw/$name.gz"
    [ -e "$source" ] || source="$data/MNIST/raw/$name"
    [ -e "$source" ] || { echo "gpu-bundle: no $data/MNIST/raw/$name(.gz): set ARCHSEARCH_DATA to MNIST's root" >&2; exit 2; }
    sources+=("$source")
done
pins=()
for package in "${packages[@]}"; do
    version=$("$python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$package" 2>/dev/null) || {
        echo "gpu-bundle: $package is not installed in $python's environment: make install first" >&2
        exit 2
    }
    pins+=("$package==$version")
done
building="$bundle.partial"  # filled first, then put in place: a failed download leaves the old bundle
rm -rf "$building"
mkdir -p "$building/data/MNIST/raw" "$building/wheels"
cp --dereference "${sources[@]}" "$building/data/MNIST/raw/"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]/#/--platform=}" -d "$building/wheels" "${pins[@]}" || {
    rm -rf "$building"
    echo "gpu-bundle: pip could not download the wheels (above); $bundle/ is unchanged" >&2
    exit 1
}
find "$building" -type l -print -quit | grep -q . && { echo "gpu-bundle: a link in $building" >&2; exit 1; }
rm -rf "$bundle"
mv "$building" "$bundle"
du -sh "$bundle"
ls "$bundle/wheels"

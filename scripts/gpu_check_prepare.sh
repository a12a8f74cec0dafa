#!/usr/bin/env bash
# Prepare, on a CPU machine with network and the project installed, what scripts/gpu_check.sh carries to the
# CUDA machine (both folders are git-ignored; about 19 MB + 4 MB):
#   .whl/      cp312 manylinux wheels of the packages that machine lacks, one version each, no dependencies
#              pulled (that machine has torch, lightning, numpy, h5py, tensorboard, matplotlib, pandas, pytest,
#              cloudpickle, typing-extensions, pyyaml, packaging, imageio, rich, scipy);
#   .gpudata/  halfcheetah-sac-10k.hdf5, 10,000 steps of online SAC (`mopo-lightning collect`, ~3 min on one
#              CPU core), and tests/hopper-random-2000-s0.hdf5, the CUDA tests' data (tests/conftest.py).
# Usage: bash scripts/gpu_check_prepare.sh [PYTHON]   (PYTHON: the project's interpreter, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}

# Not needed by fit, the tests or the benchmark, so left behind: mujoco-studio, mujoco-studio-wasm and websockets
# (MuJoCo's new viewer; physics and the classic renderer are in mujoco-core), importlib-metadata (a fallback
# of tensordict and torchrl below Python 3.8), ray, minari and rliable (sweep, Minari data and report only).
WHEELS="torchrl==0.14.1 tensordict==0.14.3 pyvers==0.2.3 hoptorch==0.1.4 orjson==3.13.0
mujoco==4.0.1 mujoco-core==4.0.1 glfw==2.11.0 pyopengl==3.1.10
gymnasium==1.4.0 farama-notifications==0.0.6
jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0"
mkdir -p .whl
for w in $WHEELS; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$w"
done
echo "wheels' requirements (each must be a carried wheel or on the CUDA machine):"
for f in .whl/*.whl; do
    unzip -p "$f" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | sed "s|^|  $(basename "$f"): |" || true
done

mkdir -p .gpudata/tests
if [[ ! -f .gpudata/halfcheetah-sac-10k.hdf5 ]]; then
    PYTHONPATH=$PWD "$PY" -m mopo_lightning.commands.cli collect --config conf/collect/halfcheetah_sac.yaml --steps 10000 \
        --path .gpudata/halfcheetah-sac-10k.hdf5 --sac.start_steps 2000 --sac.checkpoint_every 100000 \
        --sac.keep_checkpoint false
fi
PYTHONPATH=$PWD:$PWD/tests MOPO_TEST_DATA=$PWD/.gpudata/tests "$PY" -c \
    "from conftest import collected_dataset; print(collected_dataset('hopper', 2_000, seed=0))"
du -sh .whl .gpudata

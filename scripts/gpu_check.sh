#!/usr/bin/env bash
# One run of the GPU checks on a lent CUDA machine (issue 20, item 5). From the repository root:
#
#   bash scripts/gpu_check.sh
#
# through the device tool: run(command="bash scripts/gpu_check.sh", carry=[".whl", ".gpudata"], timeout_s=480).
# scripts/gpu_check_prepare.sh makes the two carried folders. Expected ~6 min on an H200; at most ~7.3 min.
#
# What it needs beside the repository (both git-ignored, prepared on a CPU machine):
#   .whl/      Python 3.12 wheels of what that machine lacks (torchrl, tensordict, mujoco, mujoco-core, glfw,
#              pyopengl, gymnasium, farama-notifications, jsonargparse, docstring-parser, typeshed-client,
#              pyvers, hoptorch, orjson); installed with --no-deps into /tmp/site, ahead of the image's own.
#   .gpudata/  halfcheetah-sac-10k.hdf5 (the 3-epoch fit's data, from `mopo-lightning collect`) and tests/
#              (the tests' hopper-random-2000-s0.hdf5, read through MOPO_TEST_DATA).
#
# Steps, each under its own `timeout`, each logged to $OUT/<step>.log; a failed step does not stop the next:
#   env    nvidia-smi, versions, the wheels' install, the imports of the fit path, a MuJoCo env
#   tests  tests/integration/test_cuda.py and the no-host-sync SAC test (CUDA against CPU, fit on the GPU)
#   fit    `mopo-lightning fit` on the GPU, 3 epochs of MOPO's size (1000 updates, 50,000-state h=5
#          rollouts, 10 evaluation episodes) on .gpudata/halfcheetah-sac-10k.hdf5; epoch seconds
#   bench  benchmarks/gpu.py: SAC updates/s eager, compiled, CUDA graphs; rollout and epoch-like seconds
#   ddp    `fit` with --trainer.strategy ddp on one GPU (both stages under DDP), small
# $OUT/summary.txt gets one line per step: name, exit status, seconds, limit. All steps together stay inside
# GPU_CHECK_BUDGET seconds (default 420): a step's limit shrinks to what is left, and a step with under 20 s
# left is skipped. GPU_CHECK_STEPS="tests bench" runs only the named steps (env always runs).
#
# Dry run on a CPU machine (checks the commands, not CUDA): GPU_CHECK_DRY_RUN=1 GPU_CHECK_PYTHON=.venv/bin/python
# OUT=/tmp/out bash scripts/gpu_check.sh -- no wheel install, --trainer.accelerator cpu, the CUDA tests' own
# logic on the CPU (MOPO_CUDA_TESTS_ON=cpu), benchmarks/gpu.py --device cpu with its eager variant, a smaller fit.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
export OUT=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
BUDGET=${GPU_CHECK_BUDGET:-420}
STEPS=${GPU_CHECK_STEPS:-tests fit bench ddp}
T0=$SECONDS
PY=${GPU_CHECK_PYTHON:-python3}
DRY=${GPU_CHECK_DRY_RUN:-0}
ACCEL=gpu BENCH_ARGS="" FIT_SMALLER=""
if [[ $DRY == 1 ]]; then
    ACCEL=cpu BENCH_ARGS="--device cpu --variants eager --updates 100"
    FIT_SMALLER="--data.updates_per_epoch 100 --mopo.rollout_freq 100 --mopo.rollout_batch_size 5000
        --dynamics.max_epochs 3 --evaluation.num_episodes 2"
    export MOPO_CUDA_TESTS_ON=cpu
fi
export PYTHONUNBUFFERED=1
export PYTHONPATH=/tmp/site:$REPO
export MOPO_TEST_DATA=$REPO/.gpudata/tests
export MUJOCO_GL=${MUJOCO_GL:-egl}
export MOPO_TRACEBACK=1  # a failing command shows its traceback, not one line
: >"$OUT/summary.txt"

# step NAME LIMIT FUNCTION: run FUNCTION under `timeout` (its whole process group), output to $OUT/NAME.log
step() {
    local name=$1 limit=$2 fn=$3 left start rc
    left=$((BUDGET - (SECONDS - T0)))
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        printf '%-6s skipped: %ss of the %ss budget left\n' "$name" "$left" "$BUDGET" | tee -a "$OUT/summary.txt"
        return
    fi
    echo "=== $name (limit ${limit}s) $(date -u +%T)"
    start=$SECONDS
    timeout -k 10 "$limit" bash -c "$fn" >"$OUT/$name.log" 2>&1
    rc=$?
    ((rc == 124 || rc == 137)) && echo "!!! $name: timed out after ${limit}s" >>"$OUT/$name.log"
    printf '%-6s rc=%-4s %4ss  (limit %ss)\n' "$name" "$rc" "$((SECONDS - start))" "$limit" | tee -a "$OUT/summary.txt"
    tail -n 5 "$OUT/$name.log"
}
wanted() { [[ " $STEPS " == *" $1 "* ]]; }

env_step() {
    set -x
    nvidia-smi
    $PY -VV
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available',
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-',
'cudnn', torch.backends.cudnn.version(), 'tf32 matmul', torch.backends.cuda.matmul.allow_tf32)"
    nproc
    free -g | head -2
    gcc --version | head -1 || echo 'no gcc (inductor needs a C compiler)'
    ldconfig -p | grep -E 'libEGL.so|libOpenGL.so' || echo 'no libEGL/libOpenGL (no off-screen rendering; not needed)'
    if [[ $DRY != 1 ]]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$REPO"/.whl/*.whl || exit 1
        ls /tmp/site
    fi
    $PY -m pip list 2>/dev/null | grep -i -E '^(torch|lightning|pytorch-lightning|numpy|pandas|h5py|tensorboard|matplotlib|pytest|scipy|rich|pyyaml|typing.extensions|cloudpickle|packaging|imageio|triton|torchmetrics) '
    $PY - <<'EOF' || exit 1
import os, sys, time
t = time.perf_counter()
import torch, lightning, tensordict, torchrl, mujoco, gymnasium, jsonargparse, h5py
import mopo_lightning.commands.cli
from mopo_lightning.commands.fit import MOPOCLI  # the fit path's imports
from mopo_lightning.envs.wrappers import make_env
for m in (torch, lightning, tensordict, torchrl, mujoco, gymnasium, jsonargparse, h5py):
    print(f"{m.__name__:<14}{getattr(m, '__version__', '?'):<16}{m.__file__}")
print(f"imports {time.perf_counter() - t:.1f} s; MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
env = make_env("halfcheetah")
obs, _ = env.reset(seed=0)
print("halfcheetah env:", obs.shape, env.step(env.action_space.sample())[1])
print("ray importable:", __import__("importlib").util.find_spec("ray") is not None)
EOF
}

tests_step() {
    $PY -m pytest -p no:cacheprovider -rA --durations=0 tests/integration/test_cuda.py \
        tests/unit/test_sac_losses.py::test_update_does_not_sync_with_the_host_between_checks
}

# per-epoch wall time of a fit run from its TensorBoard scalars (each evaluation is logged at an epoch's end)
epoch_seconds() {
    $PY - "$1" <<'EOF'
import json, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
run = Path(sys.argv[1])
results = json.loads((run / "results.json").read_text())
print("seconds per stage:", results["seconds"], "| dynamics epochs:", results["dynamics"]["epochs"])
for e in results["evaluations"]:
    print(f"  after {e['sac_updates']} updates: return {e['return_mean']:.1f}, score {e.get('normalized_score')}")
acc = EventAccumulator(str(run / "tensorboard" / "sac"))
acc.Reload()
ends = [e.wall_time for e in acc.Scalars("eval/return_mean")]
print("epoch ends (s after the first):", [round(t - ends[0], 2) for t in ends])
later = [round(b - a, 2) for a, b in zip(ends, ends[1:])]
print("SAC-stage epoch seconds after the first (rollout + updates + evaluation + checkpoint):", later)
print("first SAC-stage epoch, start-up and warm-up included:", round(results["seconds"]["policy"] - sum(later), 2))
scalars = set(acc.Tags()["scalars"])
for tag in ("eval/seconds", "rollout/transitions"):
    if tag in scalars:
        print(tag, [round(e.value, 3) for e in acc.Scalars(tag)])
EOF
}

fit_step() {
    set -x
    $PY -m mopo_lightning.commands.cli fit --data.task halfcheetah --data.path "$REPO/.gpudata/halfcheetah-sac-10k.hdf5" \
        --run_root "$WORK/fit" --run_name fit3 --seed_everything 0 \
        --trainer.accelerator $ACCEL --trainer.devices 1 --trainer.max_epochs 3 --trainer.enable_progress_bar false \
        --mopo.rollout_length 5 --mopo.penalty_coef 1.0 --mopo.rollout_batch_size 50000 \
        --data.updates_per_epoch 1000 --mopo.rollout_freq 1000 --dynamics.max_epochs 30 \
        --evaluation.num_episodes 10 $FIT_SMALLER || exit
    set +x
    epoch_seconds "$WORK/fit/fit3"
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv || true
}

bench_step() {
    $PY benchmarks/gpu.py --updates 1000 --warmup 20 $BENCH_ARGS --out "$OUT/gpu.json"
}

ddp_step() {
    set -x
    $PY -m mopo_lightning.commands.cli fit --data.task halfcheetah --data.path "$REPO/.gpudata/halfcheetah-sac-10k.hdf5" \
        --run_root "$WORK/ddp" --run_name ddp --seed_everything 0 \
        --trainer.strategy ddp --trainer.devices 1 --trainer.accelerator $ACCEL --trainer.max_epochs 2 \
        --trainer.enable_progress_bar false --mopo.rollout_batch_size 10000 --data.updates_per_epoch 200 \
        --mopo.rollout_freq 200 --dynamics.max_epochs 5 --evaluation.num_episodes 3 || exit
    set +x
    epoch_seconds "$WORK/ddp/ddp"
}

export REPO WORK PY DRY ACCEL BENCH_ARGS FIT_SMALLER
export -f env_step tests_step epoch_seconds fit_step bench_step ddp_step

step env 120 env_step
# MuJoCo's physics needs no OpenGL; should `import mujoco` fail under MUJOCO_GL=egl (no usable libEGL), run
# without a GL back end (only evaluation videos, off by default, would need one)
if ! $PY -c "import mujoco" >/dev/null 2>&1; then
    export MUJOCO_GL=disable
    echo "import mujoco failed with MUJOCO_GL=egl: MUJOCO_GL=disable from here on" | tee -a "$OUT/summary.txt"
fi
wanted tests && step tests 200 tests_step
wanted fit && step fit 150 fit_step
wanted bench && step bench 200 bench_step
wanted ddp && step ddp 120 ddp_step
echo "total $((SECONDS - T0))s of the ${BUDGET}s budget" | tee -a "$OUT/summary.txt"
ls -la "$OUT"

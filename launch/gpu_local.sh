#!/usr/bin/env bash
# One host, all its GPUs: the plain train command; JAX uses every visible GPU and the
# default mesh (data = all devices) splits each batch over them.
#
#   pip install -e . "jax[cuda12]"
#   CONFIG=configs/sports.py WORKDIR=runs/sports launch/gpu_local.sh [--config.<field>=<value> ...]
#
# e.g. --config.mesh.shape=4,2 for data 4 x fsdp 2 on 8 GPUs. Rerunning the same command
# resumes from WORKDIR. Optional: PYTHON (default python), CUDA_VISIBLE_DEVICES.
set -euo pipefail

: "${CONFIG:?set CONFIG to a config file, e.g. CONFIG=configs/sports.py}"
: "${WORKDIR:?set WORKDIR to the run folder (checkpoints, logs, summary.json), e.g. WORKDIR=runs/sports}"
PYTHON="${PYTHON:-python}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Fail fast (rather than train on the CPU) when the CUDA build of JAX is missing.
"$PYTHON" -c '
import sys, jax
if jax.default_backend() != "gpu":
  sys.exit(f"JAX sees no GPU (backend {jax.default_backend()!r}); "
           "install the CUDA build: pip install -e . \"jax[cuda12]\"")
print(f"{jax.local_device_count()} GPUs: {jax.devices()[0].device_kind}")
'
exec "$PYTHON" -m diffgrm_jax.train --config="$CONFIG" --workdir="$WORKDIR" "$@"

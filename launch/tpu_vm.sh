#!/usr/bin/env bash
# Cloud TPU VM slice: create (or queue) it, install this checkout on every worker, run
# the same train command on all workers, follow the log, fetch results, delete it.
#
#   export TPU_NAME=diffgrm ZONE=us-central2-b ACCELERATOR_TYPE=v4-32   # PROJECT=... optional
#   launch/tpu_vm.sh create          # or: queue, then `status` until ACTIVE
#   launch/tpu_vm.sh install         # Python 3.11 venv + this checkout (git HEAD) with its [tpu] extra
#   launch/tpu_vm.sh mount           # multi-host only: BUCKET=my-bucket -> /gcs/my-bucket
#   CONFIG=configs/sports.py WORKDIR=/gcs/my-bucket/runs/sports \
#     launch/tpu_vm.sh run [--config.<field>=<value> ...]
#   launch/tpu_vm.sh logs            # WORKER=0 by default; Ctrl-C stops following only
#   WORKDIR=... DEST=./results launch/tpu_vm.sh fetch
#   launch/tpu_vm.sh stop            # SIGTERM: saves a checkpoint; `run` again resumes
#   launch/tpu_vm.sh delete          # QUEUED=1 if it was made with `queue`
#
# Optional: PROJECT, RUNTIME_VERSION (default from ACCELERATOR_TYPE), SPOT=1 (create/queue),
# PYTHON_VERSION (3.11). See launch/README.md.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

cmd="${1:-}"
case "$cmd" in
  create|queue|status|install|mount|run|logs|fetch|stop|delete) shift ;;
  -h|--help|help) usage; exit 0 ;;
  *) usage >&2; echo "tpu_vm.sh: unknown or missing command '${cmd}'" >&2; exit 2 ;;
esac

: "${TPU_NAME:?set TPU_NAME to the TPU VM (slice) name, e.g. TPU_NAME=diffgrm}"
: "${ZONE:?set ZONE to a zone that has your TPU type, e.g. ZONE=us-central2-b}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"

gc_flags=(--zone="$ZONE")
if [[ -n "${PROJECT:-}" ]]; then gc_flags+=(--project="$PROJECT"); fi

# Runs a shell command on every worker (or on WORKER=<n>) of the slice.
on_workers() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gc_flags[@]}" --worker="${WORKER:-all}" \
    --command="$1"
}

runtime_version() {
  if [[ -n "${RUNTIME_VERSION:-}" ]]; then echo "$RUNTIME_VERSION"; return; fi
  case "$ACCELERATOR_TYPE" in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo "no default runtime for ACCELERATOR_TYPE=$ACCELERATOR_TYPE; set RUNTIME_VERSION" >&2
       return 1 ;;
  esac
}

# Remote path of WORKDIR: relative paths are inside the checkout, where `run` starts.
remote_workdir() {
  case "$WORKDIR" in
    /*) echo "$WORKDIR" ;;
    *) echo "diffgrm_jax/$WORKDIR" ;;
  esac
}

case "$cmd" in
  create)
    : "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE, e.g. v4-32 (4 hosts) or v5litepod-8 (1 host)}"
    version="$(runtime_version)"
    extra=()
    if [[ "${SPOT:-0}" == 1 ]]; then extra+=(--spot); fi
    gcloud compute tpus tpu-vm create "$TPU_NAME" "${gc_flags[@]}" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$version" "${extra[@]}"
    ;;
  queue)
    : "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE, e.g. v4-32 (4 hosts) or v5litepod-8 (1 host)}"
    version="$(runtime_version)"
    extra=()
    if [[ "${SPOT:-0}" == 1 ]]; then extra+=(--spot); fi
    # The queued resource and the node it creates share the name.
    gcloud compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" \
      "${gc_flags[@]}" --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$version" \
      "${extra[@]}"
    echo "queued; run 'launch/tpu_vm.sh status' until the state is ACTIVE"
    ;;
  status)
    gcloud compute tpus queued-resources describe "$TPU_NAME" "${gc_flags[@]}" \
      --format="value(state.state)"
    ;;
  install)
    command -v git >/dev/null || { echo "install needs git (it ships git HEAD)" >&2; exit 1; }
    if [[ -n "$(git -C "$REPO_DIR" status --porcelain --untracked-files=no)" ]]; then
      echo "note: uncommitted changes are not shipped; install sends git HEAD" >&2
    fi
    tarball="$(mktemp --suffix=.tar.gz)"
    trap 'rm -f "$tarball"' EXIT
    git -C "$REPO_DIR" archive --format=tar.gz --prefix=diffgrm_jax/ -o "$tarball" HEAD
    gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME":diffgrm_jax.tar.gz \
      "${gc_flags[@]}" --worker=all
    # TPU images ship an older Python; uv fetches a standalone $PYTHON_VERSION.
    on_workers "set -e; rm -rf ~/diffgrm_jax; tar xzf ~/diffgrm_jax.tar.gz -C ~;
      command -v ~/.local/bin/uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh;
      ~/.local/bin/uv venv --allow-existing -p $PYTHON_VERSION ~/venv;
      ~/.local/bin/uv pip install -p ~/venv/bin/python -e ~/diffgrm_jax'[tpu]';
      ~/venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_devices())'"
    ;;
  mount)
    : "${BUCKET:?set BUCKET to a GCS bucket name (no gs://) to mount at /gcs/BUCKET on every worker}"
    # Every process writes its own checkpoint shards, so on a multi-host slice WORKDIR
    # must be on storage all workers share. --rename-dir-limit lets orbax rename its
    # finished temporary checkpoint folders.
    on_workers "set -e;
      if ! command -v gcsfuse >/dev/null; then
        echo 'deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-'\$(lsb_release -c -s)' main' | sudo tee /etc/apt/sources.list.d/gcsfuse.list;
        curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null;
        sudo apt-get update -q && sudo apt-get install -y -q gcsfuse;
      fi;
      sudo mkdir -p /gcs/$BUCKET && sudo chown \$USER /gcs/$BUCKET;
      mountpoint -q /gcs/$BUCKET || gcsfuse --implicit-dirs --rename-dir-limit=1000000 $BUCKET /gcs/$BUCKET"
    ;;
  run)
    : "${CONFIG:?set CONFIG to a config file in the checkout, e.g. CONFIG=configs/sports.py}"
    : "${WORKDIR:?set WORKDIR to the run folder (shared storage such as /gcs/BUCKET/run on a multi-host slice)}"
    args="--config=$(printf '%q' "$CONFIG") --workdir=$(printf '%q' "$WORKDIR")"
    for a in "$@"; do args+=" $(printf '%q' "$a")"; done
    # Same command on every worker; JAX finds the other workers (DIFFGRM_DISTRIBUTED=auto).
    # setsid + nohup: training outlives the ssh session; the pid file is for `stop`.
    on_workers "cd ~/diffgrm_jax && DIFFGRM_DISTRIBUTED=auto setsid nohup ~/venv/bin/python \
      -m diffgrm_jax.train $args > ~/diffgrm_train.log 2>&1 < /dev/null &
      echo \$! > ~/diffgrm_train.pid; echo \"worker \$(hostname): started pid \$(cat ~/diffgrm_train.pid)\""
    echo "follow with: launch/tpu_vm.sh logs"
    ;;
  logs)
    WORKER="${WORKER:-0}" on_workers "tail -n 200 -f ~/diffgrm_train.log"
    ;;
  fetch)
    : "${WORKDIR:?set WORKDIR to the run folder given to 'run'}"
    : "${DEST:?set DEST to a local folder to copy the run folder into}"
    mkdir -p "$DEST"
    gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:$(remote_workdir)" "$DEST" \
      "${gc_flags[@]}" --worker=0
    echo "copied to $DEST"
    ;;
  stop)
    on_workers "test -f ~/diffgrm_train.pid && kill -TERM \$(cat ~/diffgrm_train.pid) || true"
    ;;
  delete)
    if [[ "${QUEUED:-0}" == 1 ]]; then
      gcloud compute tpus queued-resources delete "$TPU_NAME" "${gc_flags[@]}" --force --quiet
    else
      gcloud compute tpus tpu-vm delete "$TPU_NAME" "${gc_flags[@]}" --quiet
    fi
    ;;
esac

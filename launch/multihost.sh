#!/usr/bin/env bash
# Multi-host launch: every process runs the same entry point, python -m launch.main, with
# --distributed; JAX's multi-controller runtime joins them into one mesh and each host reads
# only its shard of every batch. The workdir must be storage every host sees (NFS, a mounted
# bucket): checkpoints are written collectively, logs and records by process 0.
#
#   launch/multihost.sh local N CONFIG WORKDIR [FLAGS...]
#       N processes on this machine (one CPU device each): to try multi-host code locally.
#   launch/multihost.sh host COORDINATOR:PORT NUM_PROCESSES PROCESS_ID CONFIG WORKDIR [FLAGS...]
#       run once on each GPU host, PROCESS_ID 0..NUM_PROCESSES-1, same COORDINATOR (host 0).
#   launch/multihost.sh slurm CONFIG WORKDIR [FLAGS...]
#       inside an sbatch allocation: one task per host via srun; JAX reads SLURM's variables.
#   launch/multihost.sh tpu TPU_NAME ZONE CONFIG WORKDIR [FLAGS...]
#       every worker of a Cloud TPU pod slice via gcloud; JAX finds the pod by itself. The
#       repository must be checked out at ~/robustwidth on each worker (with `make .venv/.run-deps`).
#
# Every argument reaches launch.main as given (spaces, quotes and `$(...)` included; the TPU
# workers' remote shell gets each one quoted). DRY_RUN=1 prints the commands instead of
# running them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mode=${1:?usage: see the comment at the top of launch/multihost.sh}; shift

# Runs its arguments as one command, or prints them shell-quoted under DRY_RUN (one write
# per command, so that the local mode's concurrent processes never interleave their lines).
run() {
  if [[ -n "${DRY_RUN:-}" ]]; then
    local line
    line=$(printf '%q ' "$@")
    printf '%s\n' "$line"
  else
    "$@"
  fi
}

case "$mode" in
  local)
    n=$1 config=$2 workdir=$3; shift 3
    port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    pids=()
    for ((i = 0; i < n; i++)); do
      run env XLA_FLAGS=--xla_force_host_platform_device_count=1 JAX_PLATFORMS=cpu \
        "$PY" -m launch.main --config "$config" --workdir "$workdir" --distributed \
        --coordinator_address "127.0.0.1:$port" --num_processes "$n" --process_id "$i" "$@" &
      pids+=($!)
    done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    exit "$status"
    ;;
  host)
    coordinator=$1 n=$2 id=$3 config=$4 workdir=$5; shift 5
    run "$PY" -m launch.main --config "$config" --workdir "$workdir" --distributed \
      --coordinator_address "$coordinator" --num_processes "$n" --process_id "$id" "$@"
    ;;
  slurm)
    config=$1 workdir=$2; shift 2
    run srun --ntasks-per-node=1 "$PY" -m launch.main --config "$config" \
      --workdir "$workdir" --distributed "$@"
    ;;
  tpu)
    name=$1 zone=$2 config=$3 workdir=$4; shift 4
    remote=$(printf '%q ' .venv/bin/python -m launch.main --config "$config" \
      --workdir "$workdir" --distributed "$@")
    run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command \
      "cd ~/robustwidth && $remote"
    ;;
  *)
    echo "unknown mode '$mode': use local, host, slurm or tpu (see launch/multihost.sh)" >&2
    exit 2
    ;;
esac

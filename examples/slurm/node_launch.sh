#!/bin/bash
# One machine's share of a multi-node run: `divalign train` with this machine's rank; every machine runs it.
#   NUM_MACHINES=2 MACHINE_RANK=0 MAIN_PROCESS_IP=10.0.0.1 examples/slurm/node_launch.sh RECIPE.yaml [--key value ...]
# Under SLURM (examples/slurm/pipeline.sbatch runs it once per node) the machine count and rank come from the job.
#
#   NUM_MACHINES           machines in the run (default: $SLURM_NNODES)
#   MACHINE_RANK           this machine, 0..NUM_MACHINES-1; machine 0 hosts the rendezvous (default: $SLURM_NODEID)
#   MAIN_PROCESS_IP        address of machine 0 (required)
#   MAIN_PROCESS_PORT      rendezvous port on machine 0 (default 29500)
#   PROCESSES_PER_MACHINE  processes (GPUs) per machine (default: $GPUS_PER_NODE, else 8)
#   ACCELERATE_CONFIG      preset (ddp, zero2, zero3) or accelerate config file; default: the recipe's
#                          `accelerate_config`
# Flags after the recipe override the recipe's keys, and these settings too.

set -euo pipefail

RECIPE=${1:?usage: examples/slurm/node_launch.sh RECIPE.yaml [--key value ...]}
shift
NUM_MACHINES=${NUM_MACHINES:-${SLURM_NNODES:?set NUM_MACHINES (or run under SLURM)}}
MACHINE_RANK=${MACHINE_RANK:-${SLURM_NODEID:?set MACHINE_RANK (or run under SLURM)}}
MAIN_PROCESS_IP=${MAIN_PROCESS_IP:?set MAIN_PROCESS_IP, the address of machine 0}
MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}
PROCESSES_PER_MACHINE=${PROCESSES_PER_MACHINE:-${GPUS_PER_NODE:-8}}

LAUNCH=(
    --num_machines "$NUM_MACHINES"
    --machine_rank "$MACHINE_RANK"
    --num_processes "$((NUM_MACHINES * PROCESSES_PER_MACHINE))"
    --main_process_ip "$MAIN_PROCESS_IP"
    --main_process_port "$MAIN_PROCESS_PORT"
)
if [[ -n "${ACCELERATE_CONFIG:-}" ]]; then
    LAUNCH+=(--accelerate_config "$ACCELERATE_CONFIG")
fi

exec divalign train "$RECIPE" "${LAUNCH[@]}" "$@"

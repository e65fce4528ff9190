#!/usr/bin/env bash
# Evaluate a checkpoint with GPUS processes on this node (torchrun), e.g.
#     bash tools/dist_test.sh CONFIG CHECKPOINT 8 [tools/test.py arguments]
# or a model as its config builds it (zero-shot correspondence), without a checkpoint:
#     bash tools/dist_test.sh CONFIG 8 [tools/test.py arguments]
# Several nodes: run it on each with NNODES (default 1), NODE_RANK (0), MASTER_ADDR (127.0.0.1)
# and PORT (29500) set. PYTHON picks the interpreter (default: python). Without CUDA the
# processes use the gloo backend on CPU.
set -euo pipefail

usage="usage: bash $0 CONFIG [CHECKPOINT] GPUS [tools/test.py arguments]"
if [ "$#" -lt 2 ]; then
    echo "$usage" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=()
# CONFIG GPUS [--options]: no checkpoint; CONFIG CHECKPOINT GPUS [--options] otherwise
if [[ "$2" =~ ^[0-9]+$ ]] && { [ "$#" -eq 2 ] || [[ "$3" == -* ]]; }; then
    GPUS=$2
    shift 2
else
    if [ "$#" -lt 3 ]; then
        echo "$usage" >&2
        exit 2
    fi
    CHECKPOINT=("$2")
    GPUS=$3
    shift 3
fi
if ! [[ "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: GPUS must be a positive number of processes per node, got '$GPUS'" >&2
    exit 2
fi

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"

exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" \
    "${REPO_ROOT}/tools/test.py" "$CONFIG" ${CHECKPOINT[@]+"${CHECKPOINT[@]}"} --launcher pytorch "$@"

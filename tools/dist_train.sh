#!/usr/bin/env bash
# Train with GPUS processes on this node (torchrun), e.g.
#     bash tools/dist_train.sh CONFIG 8 [tools/train.py arguments]
# Several nodes: run it on each with NNODES (default 1), NODE_RANK (0), MASTER_ADDR (127.0.0.1)
# and PORT (29500) set. PYTHON picks the interpreter (default: python). Without CUDA the
# processes use the gloo backend on CPU.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: bash $0 CONFIG GPUS [tools/train.py arguments]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
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
    "${REPO_ROOT}/tools/train.py" "$CONFIG" --launcher pytorch "$@"

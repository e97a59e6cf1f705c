#!/usr/bin/env bash
# The paper's two-stage training recipe (spec 4.1, with its defects 7.4/7.5 fixed):
#   stage 1  main/configs/main_train.yaml  supervised losses             -> output/main_train/
#   stage 2  main/configs/fine_tune.yaml   + joint contrastive InfoNCE,  -> output/fine_tune/
#            starting from stage 1's final checkpoint (output/main_train/checkpoint/last.pth.tar)
#
# Usage: ./train.sh [key=value ...]      overrides apply to both stages (e.g. data_dir=... amp=bf16);
#        set output_dir=... to keep experiments apart (the stage folders are named by the presets).
# Uses every visible GPU through torchrun when there are several, one GPU or the CPU otherwise.
# LAUNCHER overrides the launch command, e.g. for several nodes:
#   LAUNCHER="torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_endpoint host:29500" ./train.sh
set -euo pipefail
cd "$(dirname "$0")"
source tools/launcher.sh

STAGE1_CKPT=$($PYTHON -c "
from common.errors import run_entry_point
from main.config import load_config

def main(argv):
    cfg = load_config('main/configs/main_train.yaml', argv)
    print(f'{cfg.output_dir}/{cfg.exp_name}/checkpoint/last.pth.tar')

run_entry_point(main)" "$@")

echo "== stage 1: main_train =="
$LAUNCHER -m main.train --cfg main/configs/main_train.yaml "$@"
echo "== stage 2: fine_tune (from $STAGE1_CKPT) =="
$LAUNCHER -m main.train --cfg main/configs/fine_tune.yaml "$@" init_ckpt="$STAGE1_CKPT"

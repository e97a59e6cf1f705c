#!/usr/bin/env bash
# The paper's two-stage training recipe (spec 4.1, with its defects spec 7.4, 7.5 fixed):
#   stage 1  main/configs/main_train.yaml  supervised losses             -> output/main_train/
#   stage 2  main/configs/fine_tune.yaml   + joint contrastive InfoNCE,  -> output/fine_tune/
#            starting from stage 1's final checkpoint (<output_dir>/main_train/checkpoint/last.pth.tar)
#
# Usage: ./train.sh [key=value ...]      overrides apply to both stages (e.g. data_dir=... amp=bf16);
#        set output_dir=... to keep experiments apart (the stage folders are named by the presets).
# Uses every visible GPU through torchrun when there are several, one GPU or the CPU otherwise.
# LAUNCHER overrides the launch command, e.g. for several nodes:
#   LAUNCHER="torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_endpoint host:29500" ./train.sh
set -euo pipefail
cd "$(dirname "$0")"
source tools/launcher.sh

# resume=auto: re-running ./train.sh after a crash continues where it stopped (a finished stage 1 returns at once;
# stage 2 continues from its own newest checkpoint, or starts from stage 1's, fine_tune.yaml's init_ckpt).
echo "== stage 1: main_train =="
$LAUNCHER -m main.train --cfg main/configs/main_train.yaml resume=auto "$@"
echo "== stage 2: fine_tune (from stage 1's last checkpoint, fine_tune.yaml's init_ckpt) =="
$LAUNCHER -m main.train --cfg main/configs/fine_tune.yaml resume=auto "$@"

#!/usr/bin/env bash
# Reproduce the paper's 3DPW tables: evaluates each test set (3dpw, 3dpw-crowd, 3dpw-pc, 3dpw-oc) with its
# released checkpoint checkpoint/<testset>_best_ckpt.pth.tar and prints one table beside the paper's numbers.
#
# 3DPW-Crowd uses OpenPose input as the published numbers did (crowd_pose_source=openpose, spec 7.6);
# crowd_pose_source=higherhrnet gives it the intended HigherHRNet input.
#
# Usage: ./eval.sh [key=value ...]       e.g. testsets=[3dpw-oc] amp=fp16
#        CKPT_DIR=output/fine_tune/checkpoint ./eval.sh      to evaluate your own best checkpoints
# Uses every visible GPU through torchrun when there are several (each sample is still evaluated once).
set -euo pipefail
cd "$(dirname "$0")"
source tools/launcher.sh
CKPT_DIR=${CKPT_DIR:-checkpoint}

$LAUNCHER -m main.test --ckpt-dir "$CKPT_DIR" "$@"

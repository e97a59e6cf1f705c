# Sourced by train.sh and eval.sh: sets PYTHON (the project's venv if present) and LAUNCHER (torchrun over every
# visible GPU when there are several, else plain python), unless the caller already set them.
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ -z "${LAUNCHER:-}" ]; then
  NGPU=$($PYTHON -c "import torch; print(torch.cuda.device_count())")
  if [ "$NGPU" -gt 1 ]; then
    LAUNCHER="$PYTHON -m torch.distributed.run --standalone --nproc_per_node $NGPU"
  else
    LAUNCHER="$PYTHON"
  fi
fi

"""Run under torchrun by tests/test_train.py: trains with the given overrides and saves this rank's weights
(model and loss weights) to <output_dir>/rank<r>.pt, so the test can compare the processes."""
import os
import sys

import torch

from main.config import load_config
from main.train import train

if __name__ == "__main__":
    cfg = load_config(None, sys.argv[1:])
    result = train(cfg)
    rank = int(os.environ.get("RANK", "0"))
    torch.save(result.model.state_dict(), os.path.join(cfg.output_dir, f"rank{rank}.pt"))
    sys.exit(result.exit_code)
